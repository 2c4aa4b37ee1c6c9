//! Cron as crontab(5) defines it, through `jobvisor job preview --json` on
//! the real binary, against occurrences worked out by hand
//! (`cron_cases/`). `cron_reference.rs` holds the same code against an
//! implementation nobody here wrote.

mod common;
mod cron_cases;

use common::*;
use cron_cases::{CASES, TODAY};

fn preview(env: &Env, expr: &str, tz: &str, from: &str, count: usize) -> Vec<String> {
    cron_cases::preview(env, expr, tz, from, count).unwrap_or_else(|e| panic!("{expr}: {e}"))
}

#[test]
fn preview_gives_the_occurrences_crontab_5_defines() {
    let env = Env::bare();
    assert!(CASES.len() >= 40, "{} cases", CASES.len());
    let mut wrong = Vec::new();
    for (expr, tz, from, want) in CASES {
        let got = preview(&env, expr, tz, from, want.len());
        if got != *want {
            wrong.push(format!(
                "{expr:?} in {tz} after {from}:\n  want {want:?}\n  got  {got:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        !env.path("jobvisor.db").exists(),
        "preview needs no database and creates none"
    );
}

#[test]
fn occurrences_are_strictly_after_from_and_strictly_increasing() {
    let env = Env::new();
    // `--from` on an occurrence excludes it.
    assert_eq!(
        preview(&env, "0 9 * * 1", "UTC", "2026-11-30T09:00:00Z", 1),
        ["2026-12-07T09:00:00Z"]
    );
    let all = preview(&env, "*/7 */5 * * *", "Europe/Berlin", TODAY, 500);
    assert_eq!(all.len(), 500);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
}

#[test]
fn intervals_and_one_offs_preview_too() {
    let env = Env::new();
    let every = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["job", "preview", "--from", TODAY, "--count", "3", "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&env.ok(&args)).unwrap()
    };
    assert_eq!(
        every(&["--every", "90m", "--start", "2026-11-25T11:00:00Z"]),
        [
            "2026-11-25T12:30:00Z",
            "2026-11-25T14:00:00Z",
            "2026-11-25T15:30:00Z"
        ]
    );
    // Without --start the grid starts at --from.
    assert_eq!(
        every(&["--every", "1h"]),
        [
            "2026-11-25T13:00:00Z",
            "2026-11-25T14:00:00Z",
            "2026-11-25T15:00:00Z"
        ]
    );
    assert_eq!(
        every(&["--at", "2026-12-24T18:00:00Z"]),
        ["2026-12-24T18:00:00Z"]
    );
    assert!(every(&["--at", "2026-01-01T00:00:00Z"]).is_empty());
}

#[test]
fn the_human_preview_shows_utc_and_the_zone() {
    let env = Env::new();
    let out = env.ok(&[
        "job",
        "preview",
        "--cron",
        "0 9 * * 1",
        "--tz",
        "Europe/Berlin",
        "--from",
        TODAY,
        "--count",
        "2",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("UTC") && lines[0].contains("Europe/Berlin"),
        "{out}"
    );
    assert!(lines[1].starts_with("Mon 2026-11-30 08:00:00 UTC"), "{out}");
    assert!(lines[1].ends_with("Mon 2026-11-30 09:00:00 CET"), "{out}");
}

#[test]
fn bad_schedules_are_one_line_and_exit_2_as_in_job_add() {
    let env = Env::new();
    for (args, needle) in [
        (
            vec!["--cron", "0 9 * * 8"],
            "field 5 (day of week) \"8\" is not valid: 8 is out of range 0-7",
        ),
        (vec!["--cron", "0 24 * * *"], "field 2 (hour) \"24\""),
        (vec!["--cron", "0 0 0 * *"], "field 3 (day of month) \"0\""),
        (vec!["--cron", "0 0 * 13 *"], "field 4 (month) \"13\""),
        (vec!["--cron", "0 0 * * FRI-MON"], "runs backwards"),
        (vec!["--cron", "*/0 * * * *"], "step"),
        (
            vec!["--cron", "0 0 * * FOO"],
            "neither a number nor a name (SUN-SAT)",
        ),
        (vec!["--cron", "0 0 30 2 *"], "never fires"),
        (vec!["--cron", "* * * *"], "got 4"),
        (vec!["--cron", "@reboot"], "@reboot is not supported"),
        (vec!["--cron", "@fortnightly"], "unknown macro"),
        (
            vec!["--cron", "0 9 * * *", "--tz", "Mars/Olympus"],
            "unknown time zone",
        ),
        (vec!["--every", "0s"], "--every must be longer than 0"),
        (vec!["--at", "yesterday-ish"], "--at"),
        (vec!["--cron", "0 9 * * *", "--from", "soon"], "--from"),
        (vec!["--cron", "0 9 * * *", "--count", "0"], "--count"),
    ] {
        let mut all = vec!["job", "preview"];
        all.extend_from_slice(&args);
        let out = env.cli(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} lacks {needle:?}"
        );
        // job add refuses the same schedule with the same words.
        if args[0] == "--cron" && !args.contains(&"--from") && !args.contains(&"--count") {
            let mut add = vec!["job", "add", "x", "--handler", "noop"];
            add.extend_from_slice(&args);
            let out = env.cli(&add);
            let add_err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{add_err}");
            assert_eq!(add_err, stderr, "job add and job preview disagree");
        }
    }
}
