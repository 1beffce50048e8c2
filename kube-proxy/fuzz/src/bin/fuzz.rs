//! The fuzzer: `fuzz <target|all> [--iterations N] [--seed S]`, or
//! `fuzz <target|all> --write-seeds DIR` (the seeds as files under
//! `DIR/<target>/`, a starting corpus for `cargo fuzz`).
//!
//! Runs the seeds of the target, then `N` mutated inputs (1,000,000 by
//! default), each through the target function under `catch_unwind`. A
//! panic is reported with the input (written to
//! `fuzz-crash-<target>-<iteration>.bin`) and makes the exit status 1.
//! Runs are deterministic: the same seed gives the same inputs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::time::Instant;

use kube_proxy_fuzz::mutate::mutate;
use kube_proxy_fuzz::rng::Rng;
use kube_proxy_fuzz::seeds::seeds;
use kube_proxy_fuzz::targets::{TARGETS, Target, target};

struct Args {
    targets: Vec<&'static Target>,
    iterations: u64,
    seed: u64,
    write_seeds: Option<String>,
}

fn usage() -> String {
    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    format!(
        "usage: fuzz <{}|all> [--iterations N] [--seed S] | --write-seeds DIR",
        names.join("|")
    )
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let name = args.next().ok_or_else(usage)?;
    let targets = if name == "all" {
        TARGETS.iter().collect()
    } else {
        vec![target(&name).ok_or_else(|| format!("unknown target {name:?}; {}", usage()))?]
    };
    let mut parsed = Args {
        targets,
        iterations: 1_000_000,
        seed: 1,
        write_seeds: None,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        if flag == "--write-seeds" {
            parsed.write_seeds = Some(value);
            continue;
        }
        let number = value
            .parse::<u64>()
            .map_err(|e| format!("{flag} {value}: {e}"))?;
        match flag.as_str() {
            "--iterations" => parsed.iterations = number,
            "--seed" => parsed.seed = number,
            _ => return Err(format!("unknown flag {flag}; {}", usage())),
        }
    }
    Ok(parsed)
}

/// Runs one target; returns the number of panics.
fn fuzz(target: &Target, iterations: u64, seed: u64) -> u64 {
    let corpus = seeds(target.name);
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut panics = 0u64;
    let mut executions = 0u64;
    // Whether `input` made the target panic (the input is then saved).
    let run = |input: &[u8], label: &str| -> bool {
        if catch_unwind(AssertUnwindSafe(|| (target.run)(input))).is_ok() {
            return false;
        }
        let file = format!("fuzz-crash-{}-{label}.bin", target.name);
        let _ = std::fs::write(&file, input);
        eprintln!(
            "PANIC in {} on input {label} (saved to {file})",
            target.name
        );
        true
    };
    for (i, s) in corpus.iter().enumerate() {
        executions += 1;
        panics += u64::from(run(s, &format!("seed{i}")));
    }
    for i in 0..iterations {
        let Some(s) = rng.pick(&corpus) else { break };
        let input = mutate(s, target.json, target.dict, &mut rng);
        executions += 1;
        panics += u64::from(run(&input, &i.to_string()));
        if (i + 1) % 100_000 == 0 {
            eprintln!(
                "{}: {} executions, {panics} panics, {:.0}/s",
                target.name,
                i + 1,
                (i + 1) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}: {executions} executions ({} seeds + {iterations} mutated, seed {seed}) in {secs:.1} s ({:.0}/s): {panics} panics",
        target.name,
        corpus.len(),
        executions as f64 / secs
    );
    panics
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = &args.write_seeds {
        for t in &args.targets {
            let dir = std::path::Path::new(dir).join(t.name);
            let written = std::fs::create_dir_all(&dir).and_then(|()| {
                seeds(t.name)
                    .iter()
                    .enumerate()
                    .try_for_each(|(i, s)| std::fs::write(dir.join(format!("seed-{i:03}")), s))
            });
            if let Err(e) = written {
                eprintln!("writing the seeds of {} to {}: {e}", t.name, dir.display());
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let mut panics = 0;
    for t in &args.targets {
        panics += fuzz(t, args.iterations, args.seed);
    }
    if panics == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
