//! Measures `aloft_core::bsdiff` on a pair of files: patch size, time to diff and to patch, and
//! peak memory, next to the `bsdiff` command's patch size and time where it is installed.
//!
//! ```text
//! cargo run --release -p aloft-core --example bsdiff_measure -- OLD NEW [PATCH]
//! ```
//!
//! With a third path, the patch is also written there.

use std::process::{Command, ExitCode};
use std::time::Instant;

use aloft_core::bsdiff;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (old_path, new_path, out) = match args.as_slice() {
        [old, new] => (old, new, None),
        [old, new, out] => (old, new, Some(out)),
        _ => {
            eprintln!("usage: bsdiff_measure OLD NEW [PATCH]");
            return ExitCode::from(2);
        }
    };
    match measure(old_path, new_path, out.map(String::as_str)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bsdiff_measure: {err}");
            ExitCode::FAILURE
        }
    }
}

fn measure(old_path: &str, new_path: &str, out: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let old = std::fs::read(old_path)?;
    let new = std::fs::read(new_path)?;
    println!("old: {} bytes ({old_path})", old.len());
    println!("new: {} bytes ({new_path})", new.len());
    let baseline = peak_rss_kib();

    let started = Instant::now();
    let made = bsdiff::diff(&old, &new)?;
    let diff_time = started.elapsed();
    let after_diff = peak_rss_kib();
    println!(
        "patch: {} bytes ({:.2}% of new)",
        made.len(),
        100.0 * made.len() as f64 / new.len().max(1) as f64
    );
    println!("diff time: {:.3} s", diff_time.as_secs_f64());
    println!(
        "peak RSS: {} after reading the files, {} after diff (VmHWM)",
        show_kib(baseline),
        show_kib(after_diff)
    );

    let started = Instant::now();
    let rebuilt = bsdiff::patch(&old, &made)?;
    println!("patch time: {:.3} s", started.elapsed().as_secs_f64());
    if rebuilt != new {
        return Err("the patch does not rebuild the new file".into());
    }
    if let Some(out) = out {
        std::fs::write(out, &made)?;
    }

    match command_diff(old_path, new_path) {
        Ok((size, seconds)) => println!(
            "bsdiff command: {size} bytes in {seconds:.3} s (ours is {:+.2}%)",
            100.0 * (made.len() as f64 / size as f64 - 1.0)
        ),
        Err(err) => println!("bsdiff command: not measured ({err})"),
    }
    Ok(())
}

/// Runs the `bsdiff` command on the pair: its patch size and wall time.
fn command_diff(old_path: &str, new_path: &str) -> Result<(u64, f64), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("patch");
    let started = Instant::now();
    let status = Command::new("bsdiff").arg(old_path).arg(new_path).arg(&out).status()?;
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        return Err(format!("exited with {status}").into());
    }
    Ok((std::fs::metadata(&out)?.len(), seconds))
}

/// The process's peak resident memory so far, in KiB, from `/proc/self/status` (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn show_kib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "unknown".to_owned(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0))
}
