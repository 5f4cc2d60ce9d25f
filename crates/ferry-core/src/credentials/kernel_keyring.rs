//! The Linux kernel key retention service as a [`SecretStore`]: one `user`
//! key per entry, with the description `ferry:{entry}`, linked directly in
//! the user keyring (`@u`).
//!
//! Why the user keyring and not the session keyring: a process started by
//! cron, a systemd service or `docker exec` often has no session keyring of
//! its own. The kernel then gives it the user session keyring (`@us`). But a
//! later call that may create a session keyring (`KEYCTL_GET_PERSISTENT` or
//! `add_key` naming `@s`) makes the kernel attach a new anonymous session
//! keyring to the calling thread, and that keyring ends with the process.
//! `linux-keyutils-keyring-store` 1.0 makes such a call for every entry it
//! opens, so a sign-in written by one command was gone for the next. The
//! user keyring is shared by every process of the user id and does not
//! depend on sessions.
//!
//! Lifetime: since the kernel change "keys: Move the user and user-session
//! keyrings to the user_namespace" (2019, Linux 5.3), the user namespace's
//! keyring register pins the user keyring (`look_up_user_keyrings` in
//! `security/keys/process_keys.c`), so its keys stay until reboot, also
//! while no process of the user runs. Measured on Linux 6.18: a key added by
//! a process of an otherwise unused user id was read by a later process of
//! that id after the first one had exited.
//!
//! NOTE: user-keyring(7) (man-pages 6.03) still describes the older rule:
//! the kernel destroys the user keyring when the last process of the user
//! exits. On such kernels a sign-in survives only while the user has a
//! running process.
//!
//! Permissions: a new key grants its possessor everything and the owning
//! user only `view`. A process inside its own session keyring (for example
//! under `keyctl session -`) does not possess keys of `@u`, so every key
//! written here also grants the owning user `view`, `read` and `search`. Any
//! process running as that user can therefore read the secret, as with the
//! Secret Service.
//!
//! Keys are looked up among the keys linked directly in `@u`, never in
//! keyrings linked below it, so a copy left elsewhere (for example in the
//! persistent keyring by an earlier Ferry version) cannot shadow an entry
//! or survive `ferry logout`.

use linux_keyutils::{
    Key, KeyError, KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, KeySerialId, KeyType,
    Permission,
};

use super::{LINUX_ALTERNATIVES, SERVICE};
use crate::secrets::{Secret, SecretStore, SecretStoreError};

/// Maximum length of a key description that [`UserKeyring`] can find
/// again. `linux-keyutils` 0.2 describes a key into a 512-byte buffer that
/// also contains the type, owner, group and permissions.
const MAX_DESCRIPTION_BYTES: usize = 400;

/// Maximum payload of a kernel `user` key, in bytes (keyrings(7)).
pub const MAX_SECRET_BYTES: usize = 32_767;

/// `ENOSYS`: the kernel lacks the key retention service, or a seccomp
/// filter rejects its system calls with this errno.
const ENOSYS: i32 = 38;

/// The calling user's kernel keyring (`@u`) as a secret store.
#[derive(Debug)]
pub struct UserKeyring {
    keyring: KeyRing,
}

impl UserKeyring {
    /// Finds or creates the user keyring, which fails when the kernel
    /// forbids the key management system calls.
    pub fn open() -> Result<UserKeyring, SecretStoreError> {
        let keyring = KeyRing::from_special_id(KeyRingIdentifier::User, true).map_err(|error| {
            SecretStoreError::Unavailable(format!(
                "the kernel keyring (keyutils) is not usable: the user keyring could not be \
                 opened ({}); {LINUX_ALTERNATIVES}",
                describe(error)
            ))
        })?;
        Ok(UserKeyring { keyring })
    }

    /// Returns the key linked directly in the user keyring under the
    /// description of `entry`, if there is one.
    fn find(&self, entry: &str) -> Result<Option<Key>, SecretStoreError> {
        let description = description(entry)?;
        let linked =
            linked_serials().map_err(|error| failure(entry, "listing the user keyring", error))?;

        for serial in linked {
            let key = Key::from_id(serial);
            // Keys that vanished since the listing, or that this user may
            // not view, cannot be Ferry's.
            let Ok(metadata) = key.metadata() else {
                continue;
            };
            if metadata.get_type() == KeyType::User && metadata.get_description() == description {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }
}

impl SecretStore for UserKeyring {
    fn get(&self, entry: &str) -> Result<Option<Secret>, SecretStoreError> {
        let Some(key) = self.find(entry)? else {
            return Ok(None);
        };

        let mut buffer = vec![0u8; MAX_SECRET_BYTES];
        let length = match key.read(&mut buffer) {
            Ok(length) => length,
            // Unlinked by another process after the lookup.
            Err(KeyError::KeyDoesNotExist | KeyError::KeyRevoked) => return Ok(None),
            Err(error) => return Err(failure(entry, "reading the key", error)),
        };
        // The kernel returns the payload's full length, which a `user` key
        // keeps within the buffer.
        if length > buffer.len() {
            return Err(SecretStoreError::Failed {
                entry: entry.to_owned(),
                message: format!(
                    "the key's payload is {length} bytes, more than a `user` key can contain; \
                     delete it with `ferry logout`"
                ),
            });
        }
        buffer.truncate(length);

        String::from_utf8(buffer)
            .map(|text| Some(Secret::new(text)))
            .map_err(|_| SecretStoreError::Failed {
                entry: entry.to_owned(),
                message: "the stored value is not UTF-8 text; delete it with `ferry logout`"
                    .to_owned(),
            })
    }

    /// Adds the key to the calling thread's keyring, where this process
    /// possesses it and may widen its permissions, then links it in the
    /// user keyring, which replaces an older key of the same description in
    /// one step.
    fn set(&self, entry: &str, secret: &Secret) -> Result<(), SecretStoreError> {
        let description = description(entry)?;
        let thread = KeyRing::from_special_id(KeyRingIdentifier::Thread, true)
            .map_err(|error| failure(entry, "opening the thread keyring", error))?;
        let key = thread
            .add_key(&description, secret.expose())
            .map_err(|error| failure(entry, "adding the key to the thread keyring", error))?;

        let linked = key
            .set_perms(stored_key_permissions())
            .map_err(|error| failure(entry, "setting the key's permissions", error))
            .and_then(|()| {
                self.keyring
                    .link_key(key)
                    .map_err(|error| failure(entry, "linking the key in the user keyring", error))
            });
        if let Err(error) = linked {
            // The thread keyring still links the new key, so this process
            // may remove it; nothing of a failed write remains.
            if let Err(cleanup) = key.invalidate() {
                tracing::warn!(entry, error = %describe(cleanup), "removing a half-stored key failed");
            }
            return Err(error);
        }

        if let Err(error) = thread.unlink_key(key) {
            // The thread keyring ends with the thread, so the extra link
            // does no harm.
            tracing::debug!(entry, error = %describe(error), "unlinking from the thread keyring failed");
        }
        Ok(())
    }

    /// Unlinks the entry's key from the user keyring. The kernel destroys a
    /// key once no keyring links it.
    fn delete(&self, entry: &str) -> Result<(), SecretStoreError> {
        let Some(key) = self.find(entry)? else {
            return Ok(());
        };
        match self.keyring.unlink_key(key) {
            Ok(()) | Err(KeyError::KeyDoesNotExist | KeyError::KeyRevoked) => Ok(()),
            Err(error) => Err(failure(
                entry,
                "unlinking the key from the user keyring",
                error,
            )),
        }
    }
}

/// Permissions of a stored key. The possessor gets every permission. The
/// owning user gets `view`, `read` and `search`, so that processes outside
/// the writer's session can find and read the key.
fn stored_key_permissions() -> linux_keyutils::KeyPermissions {
    KeyPermissionsBuilder::builder()
        .posessor(Permission::ALL)
        .user(Permission::VIEW | Permission::READ | Permission::SEARCH)
        .build()
}

fn description(entry: &str) -> Result<String, SecretStoreError> {
    let description = format!("{SERVICE}:{entry}");
    if description.len() > MAX_DESCRIPTION_BYTES {
        return Err(SecretStoreError::Failed {
            entry: entry.to_owned(),
            message: format!(
                "the kernel keyring description would be {} bytes, more than the {MAX_DESCRIPTION_BYTES} \
                 bytes Ferry can look up; use a shorter profile name",
                description.len()
            ),
        });
    }
    Ok(description)
}

/// Returns the serial numbers of everything linked directly in the user
/// keyring. Reading a keyring returns its links as native-endian 32-bit
/// serials. The special id `@u` makes this process the keyring's possessor,
/// whatever its session keyring.
fn linked_serials() -> Result<Vec<KeySerialId>, KeyError> {
    let user_keyring = Key::from_id(KeySerialId::new(KeyRingIdentifier::User as i32));
    let mut buffer = vec![0u8; 4096];
    loop {
        // The returned length is the keyring's full size, which can exceed
        // the buffer; read again with room for all of it.
        let length = user_keyring.read(&mut buffer)?;
        if length <= buffer.len() {
            buffer.truncate(length);
            break;
        }
        buffer.resize(length, 0);
    }

    let serials = buffer
        .chunks_exact(4)
        .map(|bytes| KeySerialId::new(i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])))
        .collect();
    Ok(serials)
}

/// Maps a failed step (`stage`, for example "reading the key") to the
/// store's error, with what the user can do about it.
fn failure(entry: &str, stage: &str, error: KeyError) -> SecretStoreError {
    let cause = describe(error);
    let message = match error {
        KeyError::PermissionDenied | KeyError::Unknown(ENOSYS) => {
            return SecretStoreError::Unavailable(format!(
                "the kernel keyring (keyutils) is not usable: {stage} for entry {entry} failed \
                 ({cause}); {LINUX_ALTERNATIVES}"
            ));
        }
        KeyError::AccessDenied => format!(
            "{stage} failed ({cause}); the user keyring may hold a key `{SERVICE}:{entry}` that \
             Ferry did not write: `keyctl show @u` lists it and `keyctl unlink KEY_ID @u` removes it"
        ),
        KeyError::QuotaExceeded => format!(
            "{stage} failed because this user's kernel key quota is used up ({cause}); remove \
             unused keys (`keyctl show @u`) or raise /proc/sys/kernel/keys/maxkeys and maxbytes"
        ),
        _ => format!("{stage} failed ({cause})"),
    };
    SecretStoreError::Failed {
        entry: entry.to_owned(),
        message,
    }
}

/// Names a `linux-keyutils` error with the errno it stands for.
fn describe(error: KeyError) -> String {
    let errno = match error {
        KeyError::AccessDenied => "EACCES",
        KeyError::PermissionDenied => "EPERM",
        KeyError::QuotaExceeded => "EDQUOT",
        KeyError::KeyDoesNotExist => "ENOKEY",
        KeyError::KeyRevoked => "EKEYREVOKED",
        KeyError::KeyExpired => "EKEYEXPIRED",
        KeyError::InvalidArguments => "EINVAL",
        KeyError::OutOfMemory => "ENOMEM",
        KeyError::Unknown(ENOSYS) => "ENOSYS",
        _ => return format!("{error:?}"),
    };
    format!("{error:?}, {errno}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_names_service_and_entry() {
        assert_eq!(
            description("profile/sandbox/refresh-token").unwrap(),
            "ferry:profile/sandbox/refresh-token"
        );
    }

    #[test]
    fn overlong_description_is_rejected() {
        let entry = format!(
            "profile/{}/refresh-token",
            "p".repeat(MAX_DESCRIPTION_BYTES)
        );
        let error = description(&entry).unwrap_err();
        assert!(
            error.to_string().contains("shorter profile name"),
            "{error}"
        );
    }

    #[test]
    fn stored_key_grants_user_read_but_not_write() {
        let bits = stored_key_permissions().bits();
        let user = (bits >> 16) & 0xff;
        assert_eq!(bits >> 24, 0x3f, "possessor permissions");
        assert_eq!(user, 0x0b, "user permissions: view, read, search");
        assert_eq!(bits & 0xffff, 0, "group and other permissions");
    }

    #[test]
    fn seccomp_denial_is_unavailable() {
        let error = failure(
            "profile/a/refresh-token",
            "adding the key to the thread keyring",
            KeyError::Unknown(ENOSYS),
        );
        let SecretStoreError::Unavailable(message) = error else {
            panic!("expected Unavailable, got {error:?}");
        };
        assert!(message.contains("ENOSYS"), "{message}");
        assert!(message.contains("gnome-keyring"), "{message}");
    }
}
