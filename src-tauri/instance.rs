//! One running instance at a time, also while an instance is exiting.
//!
//! `tauri-plugin-single-instance` owns a D-Bus name (the app's identifier
//! with `.SingleInstance` appended) and a second launch forwards its
//! arguments to the name's owner, then exits. The plugin releases the name
//! only in its last clean-up step, so a launch during the first instance's
//! shutdown could forward to a process that no longer responds, and the
//! launch then failed with `NoReply`. Two measures close that gap:
//!
//! - the first instance releases the name as soon as its main window closes
//!   or it is asked to exit ([`release`]), before its shutdown work;
//! - a launch whose forwarding failed waits until the name has no owner,
//!   then starts over in the same process image ([`relaunch_after_exiting_instance`]).
//!
//! NOTE: the plugin's forwarding call has no timeout, so a launch that
//! reaches an instance which is stopped or hung, not exiting, waits until
//! that instance ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tauri::{AppHandle, Manager};

/// Environment variable counting the restarts of one launch.
const RELAUNCH_COUNT_ENV: &str = "FERRY_DESKTOP_RELAUNCH";
/// Restarts of one launch before it gives up, so that a broken bus cannot
/// make the launch restart forever.
const MAX_RELAUNCHES: u32 = 3;
/// How long a launch waits for an exiting instance to release the name.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(15);

static RELEASED: AtomicBool = AtomicBool::new(false);

/// Returns the D-Bus name that the single-instance plugin owns for an app
/// identifier.
pub fn bus_name(identifier: &str) -> String {
    format!("{identifier}.SingleInstance")
}

/// Brings the main window to the front when a second launch forwards to
/// this instance.
pub fn focus_main_window(app: &AppHandle) {
    let Some(window) = app.get_webview_window("main") else {
        // NOTE: a launch that reaches this instance after its main window
        // closed but before `release` ran opens no window. Both happen on
        // the event loop's thread one event apart, so the gap is short.
        tracing::warn!(
            "a second launch reached this instance while it exits; that launch opens no window"
        );
        return;
    };
    tracing::info!("a second launch was forwarded to this instance; showing its window");
    let _ = window.unminimize();
    let _ = window.show();
    let _ = window.set_focus();
}

/// Releases the single-instance name so that the next launch becomes the
/// running instance instead of forwarding to this exiting one. Later calls
/// do nothing.
pub fn release(app: &AppHandle) {
    if RELEASED.swap(true, Ordering::SeqCst) {
        return;
    }
    tauri_plugin_single_instance::destroy(app);
    tracing::info!("released the single-instance name before exiting");
}

/// Handles a failed forwarding to the running instance, which happens when
/// that instance exits while this launch starts. Waits until the instance
/// has released its D-Bus name, then replaces this process with a fresh
/// start of the same program and arguments. Exits with status 1 when the
/// name stays owned or after [`MAX_RELAUNCHES`] restarts.
pub fn relaunch_after_exiting_instance(bus_name: &str, failure: &str) -> ! {
    let count: u32 = std::env::var(RELAUNCH_COUNT_ENV)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    if count >= MAX_RELAUNCHES {
        eprintln!(
            "ferry-desktop cannot start: {failure}, also after {count} restarts; \
             close the other Ferry window or end its process, then start Ferry again"
        );
        std::process::exit(1);
    }
    eprintln!("ferry-desktop: {failure}; waiting until the exiting instance releases {bus_name}");

    match wait_until_unowned(bus_name, RELEASE_TIMEOUT) {
        Ok(true) => {}
        Ok(false) => {
            eprintln!(
                "ferry-desktop cannot start: another instance still owns {bus_name} after {} s and does \
                 not answer; end that process, then start Ferry again",
                RELEASE_TIMEOUT.as_secs()
            );
            std::process::exit(1);
        }
        Err(error) => {
            eprintln!(
                "ferry-desktop cannot start: checking the owner of {bus_name} on the session bus failed: {error}"
            );
            std::process::exit(1);
        }
    }

    restart(count + 1)
}

/// Polls the session bus until `name` has no owner; returns `false` when
/// `timeout` passes first.
#[cfg(target_os = "linux")]
fn wait_until_unowned(name: &str, timeout: Duration) -> Result<bool, zbus::Error> {
    let connection = zbus::blocking::Connection::session()?;
    let bus = zbus::blocking::fdo::DBusProxy::new(&connection)?;
    let name = zbus::names::BusName::try_from(name)?;
    let deadline = std::time::Instant::now() + timeout;
    while bus.name_has_owner(name.clone())? {
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(true)
}

/// Other platforms' single-instance locks are no D-Bus names: a launch
/// that failed to forward starts over once and the lock decides again.
#[cfg(not(target_os = "linux"))]
fn wait_until_unowned(_name: &str, _timeout: Duration) -> Result<bool, std::convert::Infallible> {
    Ok(true)
}

#[cfg(unix)]
fn restart(count: u32) -> ! {
    use std::os::unix::process::CommandExt as _;

    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(error) => {
            eprintln!(
                "ferry-desktop cannot restart: the path of its own program is unknown: {error}"
            );
            std::process::exit(1);
        }
    };
    let error = std::process::Command::new(&program)
        .args(std::env::args_os().skip(1))
        .env(RELAUNCH_COUNT_ENV, count.to_string())
        .exec();
    eprintln!(
        "ferry-desktop cannot restart {}: {error}",
        program.display()
    );
    std::process::exit(1);
}

#[cfg(not(unix))]
fn restart(_count: u32) -> ! {
    eprintln!("ferry-desktop cannot start while another instance exits; start Ferry again");
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_name_appends_single_instance() {
        assert_eq!(
            bus_name("org.ferry.desktop"),
            "org.ferry.desktop.SingleInstance"
        );
    }
}
