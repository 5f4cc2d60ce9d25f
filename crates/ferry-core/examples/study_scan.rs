//! Scans a study and prints the scan rate; scripts/bench-scan.sh runs it.
//!
//! Usage: cargo run -p ferry-core --example study_scan -- PATH [THREADS]

use std::path::PathBuf;
use std::time::Instant;

use ferry_core::study::{scan, scan_with_threads};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next().map(PathBuf::from) else {
        eprintln!("usage: study_scan PATH [THREADS]");
        std::process::exit(2);
    };
    let threads: Option<usize> = args.next().map(|value| {
        value.parse().unwrap_or_else(|_| {
            eprintln!("THREADS must be a positive integer, got {value}");
            std::process::exit(2);
        })
    });

    let started = Instant::now();
    let result = match threads {
        Some(threads) => scan_with_threads(&path, threads),
        None => scan(&path),
    };
    let elapsed = started.elapsed().as_secs_f64();
    let scan = result.unwrap_or_else(|error| {
        eprintln!("scan failed: {error}");
        std::process::exit(1);
    });

    let files = scan.instances.len() + scan.set_aside.len() + scan.directories.len();
    println!(
        "instances={} set_aside={} studies={} seconds={elapsed:.3} instances_per_second={:.0}",
        scan.instances.len(),
        scan.set_aside.len(),
        scan.studies.len(),
        files as f64 / elapsed
    );
}
