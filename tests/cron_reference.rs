//! jobvisor's cron against cronsim (PyPI), an implementation of Debian
//! cron's semantics that nobody here wrote: hundreds of random crontab(5)
//! expressions in several zones, each compared on its next occurrences,
//! plus every hand-worked case of `cron.rs`.
//!
//! `scripts/test` installs cronsim into `target/reference-venv` and names
//! its interpreter in JOBVISOR_REF_PYTHON.

mod common;
mod cron_cases;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const CASES: usize = 1000;

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Asia/Kolkata",
];

/// A random crontab(5) field over `lo..=hi`, with `names` usable for
/// numbers from `name_base`.
fn field(
    rng: &mut fastrand::Rng,
    lo: u32,
    hi: u32,
    star_weight: u32,
    names: &[&str],
    name_base: u32,
) -> String {
    let val = |rng: &mut fastrand::Rng, v: u32| -> String {
        let i = v.wrapping_sub(name_base) as usize;
        if !names.is_empty() && i < names.len() && rng.bool() {
            let n = names[i];
            if rng.bool() {
                n.to_lowercase()
            } else {
                n.to_string()
            }
        } else {
            v.to_string()
        }
    };
    let item = |rng: &mut fastrand::Rng| -> String {
        let a = rng.u32(lo..hi);
        // cronsim reads a stepped one-value range `a-a/n` as `a/n`; cronie
        // as the one value. Such ranges are left out.
        let b = rng.u32(a + 1..=hi);
        let step = rng.u32(1..=(hi - lo).max(2));
        match rng.u32(0..6) {
            0 | 1 => val(rng, a),
            2 => format!("{}-{}", val(rng, a), val(rng, b)),
            3 => format!("{}-{}/{step}", val(rng, a), val(rng, b)),
            4 => format!("{a}/{step}"),
            _ => format!("*/{step}"),
        }
    };
    if rng.u32(0..100) < star_weight {
        return if rng.u32(0..4) == 0 {
            format!("*/{}", rng.u32(1..=(hi - lo).max(2)))
        } else {
            "*".into()
        };
    }
    let n = rng.usize(1..=3);
    (0..n).map(|_| item(rng)).collect::<Vec<_>>().join(",")
}

fn expression(rng: &mut fastrand::Rng) -> String {
    if rng.u32(0..25) == 0 {
        let m = [
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
        ];
        return m[rng.usize(0..m.len())].into();
    }
    let months = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    let days = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let minute = field(rng, 0, 59, 20, &[], 0);
    let hour = field(rng, 0, 23, 40, &[], 0);
    let dom = field(rng, 1, 31, 55, &[], 0);
    let month = field(rng, 1, 12, 60, &months, 1);
    let dow = field(rng, 0, 7, 50, &days, 0);
    format!("{minute} {hour} {dom} {month} {dow}")
}

fn random_from(rng: &mut fastrand::Rng) -> String {
    // 2024-01-01 .. 2032-01-01, any second.
    let t = rng.i64(1_704_067_200..1_956_528_000);
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

struct Reference {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Reference {
    fn start() -> Option<Self> {
        let python = std::env::var("JOBVISOR_REF_PYTHON").unwrap_or_else(|_| "python3".into());
        let probe = Command::new(&python)
            .args(["-c", "import cronsim"])
            .output();
        if !probe.is_ok_and(|o| o.status.success()) {
            let msg = "cronsim is not installed: run ./scripts/test, which installs it";
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("!!! SKIPPED: {msg}");
            return None;
        }
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/reference/cronsim_next.py"
        );
        let mut child = Command::new(&python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Some(Self { child, out })
    }

    fn next(
        &mut self,
        expr: &str,
        tz: &str,
        from: &str,
        count: usize,
    ) -> Result<Vec<String>, String> {
        let q = serde_json::json!({"expr": expr, "tz": tz, "from": from, "count": count});
        writeln!(self.child.stdin.as_mut().unwrap(), "{q}").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        match v.get("error") {
            Some(e) => Err(e.to_string()),
            None => Ok(serde_json::from_value(v).unwrap()),
        }
    }
}

#[test]
fn random_crontab_lines_fire_when_cronsim_says_they_do() {
    let Some(mut reference) = Reference::start() else {
        return;
    };
    let env = Env::new();
    // JOBVISOR_REF_SEED explores other expressions; the default is fixed.
    let seed = std::env::var("JOBVISOR_REF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6a6f_6276_6973_6f72);
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut compared, mut refused) = (0, 0);
    let mut wrong = Vec::new();
    for _ in 0..CASES {
        let expr = expression(&mut rng);
        let tz = ZONES[rng.usize(0..ZONES.len())];
        let from = random_from(&mut rng);
        let ours = cron_cases::preview(&env, &expr, tz, &from, 5);
        let theirs = reference.next(&expr, tz, &from, 5);
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) if a == b => compared += 1,
            (Err(_), Err(_)) => refused += 1,
            _ => wrong.push(format!(
                "{expr:?} in {tz} after {from}:\n  cronsim  {theirs:?}\n  jobvisor {ours:?}"
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {CASES} differ (seed {seed}):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // Most of them must really be compared, not refused by both.
    assert!(
        compared >= CASES * 9 / 10,
        "{compared} compared, {refused} refused by both"
    );
}

#[test]
fn cronsim_agrees_with_every_hand_worked_case() {
    let Some(mut reference) = Reference::start() else {
        return;
    };
    let mut wrong = Vec::new();
    for (expr, tz, from, want) in cron_cases::CASES {
        let theirs = reference.next(expr, tz, from, want.len());
        if !theirs.as_ref().is_ok_and(|t| t == want) {
            wrong.push(format!(
                "{expr:?} in {tz} after {from}:\n  hand    {want:?}\n  cronsim {theirs:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The HTTP API's cron pattern (the OpenAPI document's `CronText`) refuses
/// no expression the parser accepts: over the same random crontab lines,
/// with no reference needed.
#[test]
fn the_apis_cron_pattern_refuses_nothing_the_parser_takes() {
    let schema =
        serde_json::json!({"type": "string", "pattern": jobvisor::contract::cron_pattern()});
    let pattern = jsonschema::validator_for(&schema).unwrap();
    let mut rng = fastrand::Rng::with_seed(0x6372_6f6e);
    let mut taken = 0;
    for _ in 0..CASES * 5 {
        let expr = expression(&mut rng);
        if jobvisor::schedule::CronSchedule::parse(&expr, "UTC").is_ok() {
            taken += 1;
            assert!(
                pattern.is_valid(&serde_json::json!(expr)),
                "the pattern refuses {expr:?}"
            );
        }
    }
    for (expr, _, _, _) in cron_cases::CASES {
        assert!(
            pattern.is_valid(&serde_json::json!(expr)),
            "the pattern refuses {expr:?}"
        );
    }
    assert!(taken > CASES, "only {taken} expressions parsed");
}
