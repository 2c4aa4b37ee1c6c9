//! `bench --scenario rescue`: how soon a surviving node takes over what a
//! killed one was running.

use super::*;

/// Result of the rescue scenario.
#[derive(Debug, Serialize)]
pub struct RescueBench {
    /// How the surviving node was placed.
    pub case: String,
    /// SIGKILL to the execution closed as interrupted, in seconds.
    pub rescue_s: f64,
}

pub(super) async fn bench_rescue(database: Option<String>, a: &BenchArgs) -> Result<(), CliError> {
    let tmp = tempfile_dir()?;
    let db = database.unwrap_or_else(|| tmp.join("rescue.db").display().to_string());
    let exe = std::env::current_exe()
        .map_err(|e| crate::failure::input(format!("cannot find this program: {e}")))?;
    let store = jobvisor::store::open(&db).await?;
    let local = |n: &str| jobvisor_worker::builtins::known(n);
    let mut results = Vec::new();
    for (case, hostname) in [
        ("survivor on the same host (dead pid seen at once)", None),
        (
            "survivor on another host (heartbeat lease only)",
            Some("bench-other-host"),
        ),
    ] {
        // Node A: a real `jobvisor serve` with default settings.
        let mut node_a = std::process::Command::new(&exe)
            .args(["--database", &db, "serve"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| crate::failure::input(format!("cannot start serve: {e}")))?;
        let exec = jobvisor::submit::prepare(
            store.store().as_ref(),
            &local,
            RunSpec::new("sleep", serde_json::json!({"ms": 600_000})).mode(Mode::Process),
        )
        .await?;
        jobvisor::submit::enqueue(store.store().as_ref(), std::slice::from_ref(&exec)).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let e = store.execution(exec.id).await?;
            if e.is_some_and(|e| e.status == jobvisor::Status::Running) {
                break;
            }
            if Instant::now() > deadline {
                let _ = node_a.kill();
                return Err(crate::failure::input("node A never started the execution"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Node B: defaults, in this process.
        let sup = Supervisor::builder()
            .database(&db)
            .configure(|c| c.hostname = hostname.map(str::to_string))
            .build()
            .await?;
        let (stop_tx, runner) = run_in_background(&sup);
        let _ = node_a.kill();
        let t0 = Instant::now();
        let _ = node_a.wait();
        loop {
            let e = store.execution(exec.id).await?;
            if e.is_some_and(|e| e.interrupted) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(300) {
                return Err(crate::failure::input("the execution was never rescued"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rescue_s = t0.elapsed().as_secs_f64();
        // Cancel the retry so the next case starts clean.
        for e in store
            .executions(&ExecFilter {
                statuses: vec![jobvisor::Status::Pending],
                limit: 100,
                ..Default::default()
            })
            .await?
        {
            store
                .store()
                .request_cancel(e.id, "bench done", jobvisor::model::now_micros())
                .await?;
        }
        let _ = stop_tx.send(());
        runner.await.expect("supervisor task")?;
        results.push(RescueBench {
            case: case.to_string(),
            rescue_s,
        });
    }
    let _ = std::fs::remove_dir_all(&tmp);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).expect("serializes")
        );
    } else {
        let d = jobvisor::supervisor::Config::default();
        println!(
            "rescue after SIGKILL of a node (defaults: lease {}, heartbeat {}):",
            jobvisor::model::format_ms(d.node_lease.as_millis() as u64),
            jobvisor::model::format_ms(d.heartbeat_interval.as_millis() as u64)
        );
        for r in &results {
            println!("  {:<52} {:>6.2} s", r.case, r.rescue_s);
        }
    }
    Ok(())
}
