//! Workflows: a graph of steps, each an execution that runs after the
//! steps it names, inserted in one transaction.
//!
//! A file (TOML or JSON) names the workflow and its `[[step]]`s:
//!
//! ```toml
//! name = "nightly"
//!
//! [[step]]
//! name = "extract"
//! handler = "extract"
//!
//! [[step]]
//! name = "load"
//! handler = "load"
//! after = ["extract"]
//! retries = 2
//! ```

use crate::model::{AfterPolicy, Mode, Status};
use crate::store::{NewWorkflow, Store, WorkflowInfo};
use crate::submit::{self, RunSpec};
use crate::Error;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

/// A workflow definition.
///
/// ```
/// use jobvisor::workflow::*;
/// let mut spec = WorkflowSpec { name: "etl".into(), steps: vec![StepSpec::new("extract", "echo")] };
/// let mut load = StepSpec::new("load", "noop");
/// load.after = vec!["extract".into()];
/// spec.steps.push(load);
/// assert_eq!(spec.order().unwrap().iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["extract", "load"]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// What it is called (need not be unique).
    #[schema(value_type = crate::contract::Name)]
    pub name: String,
    /// Its steps.
    #[serde(rename = "step", alias = "steps", default)]
    #[schema(min_items = 1, max_items = 1000)]
    pub steps: Vec<StepSpec>,
}

/// One step: a run of a handler after other steps.
///
/// ```
/// use jobvisor::workflow::*;
/// let mut step = StepSpec::new("notify", "echo");
/// step.retries = 2;
/// step.after = vec!["load".into()];
/// step.after_policy = jobvisor::model::AfterPolicy::Finished;
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique within the workflow.
    #[schema(value_type = crate::contract::Name)]
    pub name: String,
    /// The handler to run.
    #[schema(value_type = crate::contract::Name)]
    pub handler: String,
    /// Its input.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub payload: Value,
    /// inproc or process; the handler's default if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Retries after a failed attempt.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schema(maximum = 10_000)]
    pub retries: u32,
    /// Delay before the first retry (`"1s"`, doubling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::contract::Duration>)]
    pub backoff: Option<String>,
    /// Wall-clock limit of each attempt (`"30s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::contract::Duration>)]
    pub timeout: Option<String>,
    /// Higher runs first.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub priority: i32,
    /// The queue to wait in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::contract::Name>)]
    pub queue: Option<String>,
    /// The steps it runs after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<crate::contract::Name>)]
    pub after: Vec<String>,
    /// What their ends must be for it to run.
    #[serde(default, skip_serializing_if = "is_default_policy")]
    pub after_policy: AfterPolicy,
    /// Its run's meta.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "crate::model::Meta::is_empty"
    )]
    #[schema(value_type = Option<crate::contract::MetaObject>)]
    pub meta: crate::model::Meta,
    /// Its run's tags.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schema(value_type = Option<crate::contract::Tags>)]
    pub tags: Vec<String>,
}

/// A field's default when it is given as `null` (as the document allows).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl StepSpec {
    /// A step running `handler` with every default: no payload, the
    /// handler's mode, no retries, after nothing.
    ///
    /// ```
    /// use jobvisor::workflow::*;
    /// let step = StepSpec::new("extract", "echo");
    /// assert!(step.after.is_empty() && step.payload.is_null());
    /// ```
    pub fn new(name: impl Into<String>, handler: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            handler: handler.into(),
            payload: Value::Null,
            mode: None,
            retries: 0,
            backoff: None,
            timeout: None,
            priority: 0,
            queue: None,
            after: Vec::new(),
            after_policy: AfterPolicy::default(),
            meta: Default::default(),
            tags: Vec::new(),
        }
    }
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

fn is_default_policy(p: &AfterPolicy) -> bool {
    *p == AfterPolicy::default()
}

impl WorkflowSpec {
    /// Parses a workflow file: JSON if it starts with `{`, TOML otherwise.
    ///
    /// ```
    /// use jobvisor::workflow::*;
    /// # fn main() -> Result<(), jobvisor::Error> {
    /// let spec = WorkflowSpec::parse(r#"
    ///     name = "etl"
    ///     [[step]]
    ///     name = "extract"
    ///     handler = "echo"
    ///     payload = { rows = 42 }
    ///     [[step]]
    ///     name = "load"
    ///     handler = "noop"
    ///     after = ["extract"]
    /// "#)?;
    /// assert_eq!(spec.steps[0].payload["rows"], 42);
    /// let json = WorkflowSpec::parse(r#"{"name": "one", "steps": [{"name": "a", "handler": "noop"}]}"#)?;
    /// assert_eq!(json.steps.len(), 1);
    /// assert!(WorkflowSpec::parse("name = 1").is_err());
    /// # Ok(()) }
    /// ```
    pub fn parse(text: &str) -> Result<Self, Error> {
        let spec: WorkflowSpec = if text.trim_start().starts_with('{') {
            serde_json::from_str(text)
                .map_err(|e| invalid(format!("invalid workflow JSON: {e}")))?
        } else {
            toml::from_str(text).map_err(|e| {
                let msg = e.message().trim().to_string();
                match e.span() {
                    Some(span) => {
                        let before = &text.as_bytes()[..span.start.min(text.len())];
                        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                        invalid(format!("invalid workflow TOML at line {line}: {msg}"))
                    }
                    None => invalid(format!("invalid workflow TOML: {msg}")),
                }
            })?
        };
        spec.order()?;
        Ok(spec)
    }

    /// The steps in dependency order (each after those it names; among the
    /// ready ones, in the order given), or why there is none: no steps, a
    /// duplicate name, an unknown step, or a cycle.
    ///
    /// ```
    /// use jobvisor::workflow::*;
    /// let mut a = StepSpec::new("a", "noop");
    /// a.after = vec!["b".into()];
    /// let mut b = StepSpec::new("b", "noop");
    /// b.after = vec!["a".into()];
    /// let cycle = WorkflowSpec { name: "c".into(), steps: vec![a, b] };
    /// assert_eq!(cycle.order().unwrap_err().to_string(), "steps form a cycle: b -> a -> b");
    /// // `parse` checks the order too.
    /// assert!(WorkflowSpec::parse(&serde_json::to_string(&cycle).unwrap()).is_err());
    /// ```
    pub fn order(&self) -> Result<Vec<&StepSpec>, Error> {
        if self.name.trim().is_empty() {
            return Err(invalid("a workflow needs a name"));
        }
        crate::model::check_name("workflow name", &self.name).map_err(invalid)?;
        if self.steps.is_empty() {
            return Err(invalid(format!("workflow {:?} has no steps", self.name)));
        }
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(self.steps.len());
        for (i, s) in self.steps.iter().enumerate() {
            if s.name.is_empty() {
                return Err(invalid(format!("step {} has an empty name", i + 1)));
            }
            crate::model::check_name("step name", &s.name).map_err(invalid)?;
            if index.insert(s.name.as_str(), i).is_some() {
                return Err(invalid(format!("duplicate step name {:?}", s.name)));
            }
        }
        // Kahn's algorithm over step indices.
        let mut missing = vec![0usize; self.steps.len()];
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); self.steps.len()];
        for (i, s) in self.steps.iter().enumerate() {
            let parents: BTreeSet<usize> = s
                .after
                .iter()
                .map(|p| {
                    index.get(p.as_str()).copied().ok_or_else(|| {
                        invalid(format!("step {:?} runs after unknown step {p:?}", s.name))
                    })
                })
                .collect::<Result<_, _>>()?;
            missing[i] = parents.len();
            for p in parents {
                children[p].push(i);
            }
        }
        let mut ready: BTreeSet<usize> =
            (0..self.steps.len()).filter(|&i| missing[i] == 0).collect();
        let mut order = Vec::with_capacity(self.steps.len());
        while let Some(i) = ready.pop_first() {
            order.push(&self.steps[i]);
            for &c in &children[i] {
                missing[c] -= 1;
                if missing[c] == 0 {
                    ready.insert(c);
                }
            }
        }
        if order.len() < self.steps.len() {
            return Err(invalid(format!(
                "steps form a cycle: {}",
                self.cycle(&index, &missing).join(" -> ")
            )));
        }
        Ok(order)
    }

    /// One cycle among the steps Kahn's algorithm could not order, as
    /// names, the first repeated at the end.
    fn cycle(&self, index: &HashMap<&str, usize>, missing: &[usize]) -> Vec<String> {
        // Every unordered step has an unordered parent: walk parents until
        // a step repeats.
        let start = missing.iter().position(|&m| m > 0).unwrap_or(0);
        let mut seen: HashMap<usize, usize> = HashMap::new();
        let mut path = Vec::new();
        let mut at = start;
        while !seen.contains_key(&at) {
            seen.insert(at, path.len());
            path.push(at);
            at = self.steps[at]
                .after
                .iter()
                .filter_map(|p| index.get(p.as_str()).copied())
                .find(|&p| missing[p] > 0)
                .unwrap_or(at);
        }
        let mut cycle: Vec<String> = path[seen[&at]..]
            .iter()
            .rev()
            .map(|&i| self.steps[i].name.clone())
            .collect();
        cycle.push(cycle[0].clone());
        cycle
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// A workflow just inserted.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// # let store = sup.store().as_ref();
/// use jobvisor::workflow::*;
/// let spec = WorkflowSpec::parse(r#"
///     name = "etl"
///     [[step]]
///     name = "extract"
///     handler = "echo"
///     payload = { rows = 42 }
///     [[step]]
///     name = "load"
///     handler = "noop"
///     after = ["extract"]
/// "#)?;
/// let done: Submitted = sup.workflow(&spec).await?;
/// assert_eq!(done.steps.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["extract", "load"]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Submitted {
    /// Its id.
    pub id: Uuid,
    /// Each step's execution, in dependency order: `[name, id]` pairs.
    #[schema(schema_with = steps_schema)]
    pub steps: Vec<(String, Uuid)>,
}

/// Submits workflow `spec`: its steps inserted in one transaction, each
/// resolved against the registered handlers and `local`; gives back the
/// steps' executions as inserted too. Nothing is written if a step names an
/// unknown handler or step, or the steps form a cycle.
pub(crate) async fn submit_inserting(
    store: &dyn Store,
    local: &(dyn Fn(&str) -> bool + Sync),
    spec: &WorkflowSpec,
) -> Result<(Submitted, Vec<crate::model::NewExecution>), Error> {
    let order = spec.order()?;
    let id = Uuid::now_v7();
    let mut runs = Vec::with_capacity(order.len());
    for s in &order {
        let duration = |what: &str, v: &Option<String>| {
            v.as_deref()
                .map(crate::model::parse_duration)
                .transpose()
                .map_err(|e| invalid(format!("step {:?}: {what}: {e}", s.name)))
        };
        let mut run = RunSpec {
            mode: s.mode,
            retries: s.retries,
            timeout: duration("timeout", &s.timeout)?,
            priority: s.priority,
            after_policy: s.after_policy,
            meta: s.meta.clone(),
            tags: s.tags.clone(),
            ..RunSpec::new(s.handler.clone(), s.payload.clone())
        };
        if let Some(b) = duration("backoff", &s.backoff)? {
            run.backoff = b;
        }
        if let Some(q) = &s.queue {
            run.queue = q.clone();
        }
        runs.push(run);
    }
    let mut execs = submit::prepare_many(store, local, runs)
        .await
        .map_err(|e| match e {
            Error::UnknownHandler(h) => invalid(format!(
                "unknown handler {h:?} (`jobvisor handler list` shows the registered ones)"
            )),
            other => other,
        })?;
    let ids: HashMap<&str, Uuid> = order
        .iter()
        .zip(&execs)
        .map(|(s, e)| (s.name.as_str(), e.id))
        .collect();
    for (s, e) in order.iter().zip(&mut execs) {
        e.after = s.after.iter().map(|p| ids[p.as_str()]).collect();
        e.step = Some((id, s.name.clone()));
        e.origin = crate::model::Origin::Workflow;
    }
    let stored = WorkflowSpec {
        name: spec.name.clone(),
        steps: order.iter().map(|s| (*s).clone()).collect(),
    };
    let workflow = NewWorkflow {
        id,
        name: spec.name.clone(),
        spec: serde_json::to_value(&stored).expect("workflow specs serialize"),
    };
    store
        .enqueue_workflow(&workflow, &execs, crate::model::now_micros())
        .await?;
    let submitted = Submitted {
        id,
        steps: order
            .iter()
            .zip(&execs)
            .map(|(s, e)| (s.name.clone(), e.id))
            .collect(),
    };
    Ok((submitted, execs))
}

/// A workflow's overall status, from its steps' (last attempts').
///
/// `pending` until a step starts; `running` while any has not ended (or
/// `cancelling`, once cancelled, until its running steps stop); then
/// `failed` if a step failed, else `cancelled` if one was cancelled, else
/// `succeeded`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// # let store = sup.store().as_ref();
/// use jobvisor::workflow::*;
/// let spec = WorkflowSpec::parse(r#"
///     name = "etl"
///     [[step]]
///     name = "extract"
///     handler = "echo"
///     payload = { rows = 42 }
///     [[step]]
///     name = "load"
///     handler = "noop"
///     after = ["extract"]
/// "#)?;
/// let w = sup.workflow(&spec).await?;
/// let (info, _, _) = store.workflow(w.id).await?.unwrap();
/// assert_eq!(overall(&info), "pending");
/// # Ok(()) }
/// ```
pub fn overall(info: &WorkflowInfo) -> &'static str {
    let n = |s: Status| info.steps.get(&s).copied().unwrap_or(0);
    let active = n(Status::Waiting) + n(Status::Pending) + n(Status::Held) + n(Status::Running);
    let ended = n(Status::Succeeded) + n(Status::Failed) + n(Status::Cancelled);
    if active > 0 {
        if info.cancelled_at.is_some() {
            "cancelling"
        } else if n(Status::Running) > 0 || ended > 0 {
            "running"
        } else {
            "pending"
        }
    } else if n(Status::Failed) > 0 {
        "failed"
    } else if n(Status::Cancelled) > 0 {
        "cancelled"
    } else {
        "succeeded"
    }
}

/// The names [`overall`] returns.
pub const OVERALL: [&str; 6] = [
    "pending",
    "running",
    "cancelling",
    "succeeded",
    "failed",
    "cancelled",
];

fn steps_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::model::schema(crate::model::pairs_schema(
        serde_json::json!({"format": "uuid"}),
    ))
}

fn overall_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    crate::model::schema(serde_json::json!({"type": "string", "enum": OVERALL}))
}

/// A workflow in a list: where its steps stand, and its overall status.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// # let store = sup.store().as_ref();
/// use jobvisor::workflow::*;
/// let spec = WorkflowSpec::parse(r#"
///     name = "etl"
///     [[step]]
///     name = "extract"
///     handler = "echo"
///     payload = { rows = 42 }
///     [[step]]
///     name = "load"
///     handler = "noop"
///     after = ["extract"]
/// "#)?;
/// sup.workflow(&spec).await?;
/// let list: Vec<Summary> = store.workflows(10).await?.into_iter().map(Summary::from).collect();
/// assert_eq!(list[0].status, "pending");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Summary {
    /// As stored.
    #[serde(flatten)]
    pub info: WorkflowInfo,
    /// See [`overall`].
    #[schema(schema_with = overall_schema)]
    pub status: &'static str,
}

impl From<WorkflowInfo> for Summary {
    fn from(info: WorkflowInfo) -> Self {
        let status = overall(&info);
        Self { info, status }
    }
}

/// A workflow shown in full: its steps in dependency order.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// # let store = sup.store().as_ref();
/// use jobvisor::workflow::*;
/// let spec = WorkflowSpec::parse(r#"
///     name = "etl"
///     [[step]]
///     name = "extract"
///     handler = "echo"
///     payload = { rows = 42 }
///     [[step]]
///     name = "load"
///     handler = "noop"
///     after = ["extract"]
/// "#)?;
/// let w = sup.workflow(&spec).await?;
/// let (info, stored, execs) = store.workflow(w.id).await?.unwrap();
/// let view = View::new(info, &stored, execs);
/// assert_eq!(view.steps[1].after, ["extract"]);
/// assert_eq!(view.steps[1].status, Some(jobvisor::Status::Waiting));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct View {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// See [`overall`].
    #[schema(schema_with = overall_schema)]
    pub status: &'static str,
    /// When it was submitted.
    pub created_at: crate::model::Timestamp,
    /// When it was cancelled, if it was.
    pub cancelled_at: Option<crate::model::Timestamp>,
    /// Its steps, each after those it runs after.
    pub steps: Vec<StepView>,
}

/// One step of a [`View`]: its definition and its last attempt.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// # let store = sup.store().as_ref();
/// use jobvisor::workflow::*;
/// let spec = WorkflowSpec::parse(r#"
///     name = "etl"
///     [[step]]
///     name = "extract"
///     handler = "echo"
///     payload = { rows = 42 }
///     [[step]]
///     name = "load"
///     handler = "noop"
///     after = ["extract"]
/// "#)?;
/// let w = sup.workflow(&spec).await?;
/// let (info, stored, execs) = store.workflow(w.id).await?.unwrap();
/// let first: &StepView = &View::new(info, &stored, execs).steps[0];
/// assert_eq!((first.name.as_str(), first.handler.as_str(), first.attempt), ("extract", "echo", Some(1)));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StepView {
    /// The step's name.
    pub name: String,
    /// Its handler.
    pub handler: String,
    /// The steps it runs after.
    pub after: Vec<String>,
    /// What their ends must be for it to run.
    pub after_policy: AfterPolicy,
    /// Its execution (the last attempt); `None` once retention removed it.
    pub execution: Option<Uuid>,
    /// The execution's status.
    pub status: Option<Status>,
    /// Which attempt.
    pub attempt: Option<u32>,
    /// When it started.
    pub started_at: Option<crate::model::Timestamp>,
    /// When it ended.
    pub finished_at: Option<crate::model::Timestamp>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Its output.
    pub output: Option<Value>,
}

impl View {
    /// Joins a stored workflow's definition with its steps' executions.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store().as_ref();
    /// use jobvisor::workflow::*;
    /// let spec = WorkflowSpec::parse(r#"
    ///     name = "etl"
    ///     [[step]]
    ///     name = "extract"
    ///     handler = "echo"
    ///     payload = { rows = 42 }
    ///     [[step]]
    ///     name = "load"
    ///     handler = "noop"
    ///     after = ["extract"]
    /// "#)?;
    /// let w = sup.workflow(&spec).await?;
    /// let (info, stored, execs) = store.workflow(w.id).await?.unwrap();
    /// assert_eq!(View::new(info, &stored, execs).name, "etl");
    /// # Ok(()) }
    /// ```
    pub fn new(info: WorkflowInfo, spec: &Value, execs: Vec<crate::model::Execution>) -> Self {
        let steps: Vec<StepSpec> = spec
            .get("step")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let mut by_step: HashMap<String, crate::model::Execution> = execs
            .into_iter()
            .filter_map(|e| e.step.clone().map(|s| (s, e)))
            .collect();
        Self {
            id: info.id,
            name: info.name.clone(),
            status: overall(&info),
            created_at: info.created_at,
            cancelled_at: info.cancelled_at,
            steps: steps
                .into_iter()
                .map(|s| {
                    let e = by_step.remove(&s.name);
                    StepView {
                        handler: s.handler,
                        after: s.after,
                        after_policy: s.after_policy,
                        execution: e.as_ref().map(|e| e.id),
                        status: e.as_ref().map(|e| e.status),
                        attempt: e.as_ref().map(|e| e.attempt),
                        started_at: e.as_ref().and_then(|e| e.started_at),
                        finished_at: e.as_ref().and_then(|e| e.finished_at),
                        error: e.as_ref().and_then(|e| e.error.clone()),
                        output: e.and_then(|e| e.output),
                        name: s.name,
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(steps: &[(&str, &[&str])]) -> WorkflowSpec {
        WorkflowSpec {
            name: "w".into(),
            steps: steps
                .iter()
                .map(|(name, after)| StepSpec {
                    after: after.iter().map(|s| s.to_string()).collect(),
                    ..StepSpec::new(*name, "noop")
                })
                .collect(),
        }
    }

    fn names(spec: &WorkflowSpec) -> Vec<&str> {
        spec.order()
            .unwrap()
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }

    #[test]
    fn steps_are_ordered_after_their_parents_and_otherwise_as_given() {
        let s = spec(&[("load", &["a", "b"]), ("b", &[]), ("a", &["b"]), ("z", &[])]);
        assert_eq!(names(&s), ["b", "a", "load", "z"]);
    }

    #[test]
    fn a_cycle_is_refused_and_named() {
        let s = spec(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("d", &[])]);
        let e = s.order().unwrap_err().to_string();
        assert!(e.starts_with("steps form a cycle: "), "{e}");
        // The cycle, in the direction the steps run, closed.
        let cycle: Vec<&str> = e["steps form a cycle: ".len()..].split(" -> ").collect();
        assert_eq!(cycle.len(), 4, "{e}");
        assert_eq!(cycle.first(), cycle.last(), "{e}");
        for step in ["a", "b", "c"] {
            assert!(cycle.contains(&step), "{e}");
        }
        let s = spec(&[("a", &["a"])]);
        assert_eq!(
            s.order().unwrap_err().to_string(),
            "steps form a cycle: a -> a"
        );
    }

    #[test]
    fn unknown_and_duplicate_steps_are_refused() {
        let e = spec(&[("a", &["nope"])]).order().unwrap_err().to_string();
        assert_eq!(e, r#"step "a" runs after unknown step "nope""#);
        let e = spec(&[("a", &[]), ("a", &[])])
            .order()
            .unwrap_err()
            .to_string();
        assert_eq!(e, r#"duplicate step name "a""#);
        let e = spec(&[]).order().unwrap_err().to_string();
        assert_eq!(e, r#"workflow "w" has no steps"#);
    }

    #[test]
    fn toml_and_json_files_read_alike() {
        let toml = "name = \"etl\"\n[[step]]\nname = \"e\"\nhandler = \"noop\"\n\
                    [[step]]\nname = \"l\"\nhandler = \"noop\"\nafter = [\"e\"]\n\
                    after_policy = \"finished\"\ntimeout = \"30s\"\nretries = 2\n";
        let json = r#"{"name": "etl", "step": [{"name": "e", "handler": "noop"},
            {"name": "l", "handler": "noop", "after": ["e"], "after_policy": "finished",
             "timeout": "30s", "retries": 2}]}"#;
        let a = WorkflowSpec::parse(toml).unwrap();
        assert_eq!(a, WorkflowSpec::parse(json).unwrap());
        assert_eq!(a.steps[1].after_policy, AfterPolicy::Finished);
        let e = WorkflowSpec::parse("name = \"x\"\n[[step]]\nname = \"a\"\nhandlr = \"noop\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid workflow TOML at line 4: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
