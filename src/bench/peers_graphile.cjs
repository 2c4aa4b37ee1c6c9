// graphile-worker's side of `jobvisor bench --scenario peers`, run by node
// from the temporary directory graphile-worker was installed into (the
// bench writes it there as runner.cjs).
//
//   node runner.cjs enqueue COUNT   installs the schema, adds COUNT no-op
//                                   jobs in one statement
//   node runner.cjs drain COUNT     runs them with graphile-worker's
//                                   documented fast settings; prints
//                                   {"drain_ms": ..., "jobs": ...}
//
// The database is $DATABASE_URL (in the environment: it may hold a
// password, and a command line is readable by every local user).
//
// The drain is timed from the first job's start to the moment the jobs
// table is empty (graphile-worker deletes a job when it ends).
"use strict";
const { run, makeWorkerUtils } = require("graphile-worker");
const { Pool } = require("pg");

const [mode, countText] = process.argv.slice(2);
const connectionString = process.env.DATABASE_URL;
const count = parseInt(countText, 10);
const CONCURRENCY = 24;

async function enqueue() {
  const utils = await makeWorkerUtils({ connectionString });
  await utils.migrate();
  await utils.release();
  const pool = new Pool({ connectionString });
  await pool.query("delete from graphile_worker._private_jobs");
  await pool.query(
    `select graphile_worker.add_jobs((
       select array_agg(json_populate_record(null::graphile_worker.job_spec,
         json_build_object('identifier', 'noop', 'payload', json_build_object('i', i))))
       from generate_series(1, $1::int) i))`,
    [count],
  );
  await pool.end();
}

async function drain() {
  const pool = new Pool({ connectionString });
  let first = null;
  const runner = await run({
    noHandleSignals: true,
    taskList: { noop: async () => {} },
    preset: {
      worker: {
        connectionString,
        concurrentJobs: CONCURRENCY,
        maxPoolSize: CONCURRENCY + 1,
        localQueue: { size: 500, refetchDelay: { durationMs: 10 } },
        completeJobBatchDelay: 0,
        failJobBatchDelay: 0,
        pollInterval: 1000,
        logger: undefined,
      },
    },
    logger: quiet(),
  });
  runner.events.on("job:start", () => {
    if (first === null) first = process.hrtime.bigint();
  });
  let last;
  for (;;) {
    const { rows } = await pool.query(
      "select count(*)::int as n from graphile_worker._private_jobs",
    );
    if (rows[0].n === 0 && first !== null) {
      last = process.hrtime.bigint();
      break;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  await runner.stop();
  await pool.end();
  const drain_ms = Number(last - first) / 1e6;
  process.stdout.write(JSON.stringify({ drain_ms, jobs: count }) + "\n");
}

function quiet() {
  const { Logger } = require("graphile-worker");
  return new Logger(() => () => {});
}

(mode === "enqueue" ? enqueue() : drain()).catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + "\n");
  process.exit(1);
});
