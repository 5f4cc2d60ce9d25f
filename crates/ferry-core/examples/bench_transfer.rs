//! One Ferry transfer against a running sandbox gateway, for
//! `scripts/bench-transfer.sh`; also presigns one URL for the curl run.
//!
//! ```text
//! bench_transfer upload FHIR_BASE_URL FILE JOURNAL        # prints the document id
//! bench_transfer download FHIR_BASE_URL DOCUMENT_ID FOLDER JOURNAL
//! bench_transfer presign METHOD ENDPOINT REGION BUCKET KEY  # keys in AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
//! ```
//!
//! Sign-in goes through the sandbox's `--auto-login` with a credential
//! store in memory, so nothing is written outside `JOURNAL`. Transfers
//! use the engine's default settings. `RUST_LOG` (for example
//! `ferry_core=debug`) turns on logs to standard error, among them the
//! elapsed time of each phase of a download.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferry_core::grant::GrantClient;
use ferry_core::http::{HttpOptions, build_client};
use ferry_core::login::{LoginOptions, ProfileContext, RedirectFollower, SignInKind, login};
use ferry_core::profile::{FerryDirs, Profile};
use ferry_core::secrets::MemorySecretStore;
use ferry_core::transfer::{DownloadOptions, Engine, EngineOptions, ExistingFile, TransferOutcome, UploadOptions};

const PATIENT: &str = "pat-001";

fn usage() -> ! {
    eprintln!(
        "usage: bench_transfer upload FHIR_BASE_URL FILE JOURNAL\n       \
         bench_transfer download FHIR_BASE_URL DOCUMENT_ID FOLDER JOURNAL\n       \
         bench_transfer presign METHOD ENDPOINT REGION BUCKET KEY"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["upload", fhir, file, journal] => {
            let engine = engine(fhir, journal).await?;
            let outcome = engine
                .upload(file, PATIENT, UploadOptions::default())
                .await?
                .wait()
                .await?;
            let TransferOutcome::Uploaded { document_id, .. } = outcome else {
                return Err(format!("the upload ended as {outcome:?}").into());
            };
            println!("{document_id}");
        }
        ["download", fhir, document_id, folder, journal] => {
            let engine = engine(fhir, journal).await?;
            let options = DownloadOptions {
                existing_file: ExistingFile::Overwrite,
            };
            let outcome = engine.download(document_id, folder, options).await?.wait().await?;
            let TransferOutcome::Downloaded { path, .. } = outcome else {
                return Err(format!("the download ended as {outcome:?}").into());
            };
            println!("{}", path.display());
        }
        ["presign", method, endpoint, region, bucket, key] => {
            let credentials = ferry_store::Credentials::new(
                std::env::var("AWS_ACCESS_KEY_ID")?,
                std::env::var("AWS_SECRET_ACCESS_KEY")?,
            );
            let endpoint = url::Url::parse(endpoint)?;
            let request = ferry_store::presign::S3Request {
                method,
                endpoint: &endpoint,
                addressing: ferry_store::presign::Addressing::Path,
                bucket,
                key,
                query: &[],
                headers: &[],
            };
            let params = ferry_store::presign::SigningParams {
                credentials: &credentials,
                region,
                now: SystemTime::now(),
            };
            let url = ferry_store::presign::presign(&request, Duration::from_secs(3600), &params)?;
            println!("{}", url.into_string());
        }
        _ => usage(),
    }
    Ok(())
}

async fn engine(fhir: &str, journal: &str) -> Result<Engine, Box<dyn std::error::Error>> {
    let home = std::path::Path::new(journal).with_extension("home");
    let context = ProfileContext {
        profile: Profile::new("bench", fhir, None)?,
        dirs: FerryDirs::under(&home),
        store: Arc::new(MemorySecretStore::default()),
        http: build_client(&HttpOptions::default())?,
    };
    let options = LoginOptions {
        kind: SignInKind::Clinician,
        browser: Arc::new(RedirectFollower::new()),
        paste: None,
        timeout: Duration::from_secs(60),
        prompt: Arc::new(|_| {}),
    };
    let session = login(&context, options).await?;
    let grants = GrantClient::new(session.grant_api()?, context.http.clone(), Arc::new(session));
    Ok(Engine::new(journal, grants, EngineOptions::default())?)
}
