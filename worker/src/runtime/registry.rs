//! The workflows this process can run, by name, so that recovered and queued workflows can be
//! started from their stored name and inputs.
//!
//! `#[mainstay::workflow]` registers each workflow at link time (through `inventory`); code
//! without macros registers with [`crate::MainstayBuilder::register`].

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::model::error::{Error, Result};
use crate::runtime::app::Runtime;
use crate::runtime::workflow::{run_claimed, Workflow};
use crate::sysdb::Claimed;

type Runner = fn(Arc<Runtime>, Claimed) -> BoxFuture<'static, ()>;

/// A registered workflow: its name, a type-erased runner, and the cron schedule (with its time
/// zone) it runs on, if it is a scheduled workflow.
#[derive(Clone, Copy)]
pub struct Registration {
    pub(crate) name: fn() -> &'static str,
    /// The Rust type that registered it (where its code is, for messages).
    pub(crate) rust_type: fn() -> &'static str,
    pub(crate) source: fn() -> u64,
    pub(crate) arguments: fn() -> Option<&'static [&'static str]>,
    pub(crate) runner: Runner,
    pub(crate) schedule: Option<(&'static str, Option<&'static str>)>,
}

impl Registration {
    /// The registration of workflow type `W`.
    pub const fn of<W: Workflow>() -> Registration {
        Registration {
            name: name_of::<W>,
            rust_type: std::any::type_name::<W>,
            source: source_of::<W>,
            arguments: arguments_of::<W>,
            runner: run_claimed::<W>,
            schedule: None,
        }
    }

    /// The registration of workflow type `W`, run at every tick of `cron` (5 fields, or 6 with
    /// seconds first) in time zone `zone` (IANA; `None` for UTC). `W` takes
    /// `(scheduled_at, context)`, as every scheduled workflow does: the tick
    /// (`chrono::DateTime<Utc>`) and the schedule's context, any `DeserializeOwned` type
    /// (`null` for a schedule declared in code, so `serde_json::Value`, `Option<T>` or `()`).
    /// Its schedule is named `{app}.{workflow}` for an application with a name
    /// ([`crate::Config::app_name`]), else after the workflow.
    pub const fn scheduled<W: Workflow>(cron: &'static str, zone: Option<&'static str>) -> Registration {
        Registration { schedule: Some((cron, zone)), ..Self::of::<W>() }
    }
}

fn name_of<W: Workflow>() -> &'static str {
    W::NAME
}

fn source_of<W: Workflow>() -> u64 {
    W::SOURCE_HASH
}

fn arguments_of<W: Workflow>() -> Option<&'static [&'static str]> {
    W::ARGUMENTS
}

inventory::collect!(Registration);

#[derive(Default)]
pub(crate) struct Registry {
    by_name: BTreeMap<&'static str, Registration>,
}

impl Registry {
    /// Everything registered by the macros, plus `extra`. One type registered twice (by its
    /// macro and by hand) counts once; two types under one name are refused.
    pub(crate) fn collect(extra: &[Registration]) -> Result<Registry> {
        let mut by_name: BTreeMap<&'static str, Registration> = BTreeMap::new();
        let all: Vec<Registration> = inventory::iter::<Registration>.into_iter().copied().chain(extra.iter().copied()).collect();
        for r in &all {
            let name = (r.name)();
            match by_name.get(name) {
                Some(first) if (first.rust_type)() != (r.rust_type)() => {
                    let (mut a, mut b) = ((first.rust_type)().to_string(), (r.rust_type)().to_string());
                    // In a stable order, whatever the link order.
                    if a > b {
                        std::mem::swap(&mut a, &mut b);
                    }
                    return Err(Error::DuplicateWorkflow { name: name.to_string(), first: a, second: b });
                }
                Some(_) => {}
                None => {
                    by_name.insert(name, *r);
                }
            }
        }
        Ok(Registry { by_name })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Registration> {
        self.by_name.get(name)
    }

    /// The schedules declared in code: (workflow name, cron, time zone).
    pub(crate) fn schedules(&self) -> impl Iterator<Item = (&'static str, &'static str, Option<&'static str>)> + '_ {
        self.by_name.iter().filter_map(|(name, r)| r.schedule.map(|(cron, zone)| (*name, cron, zone)))
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_name.keys().copied()
    }

    /// Every registered workflow's name, argument types (when known) and schedule (cron and
    /// time zone), by name.
    #[allow(clippy::type_complexity)]
    pub(crate) fn signatures(
        &self,
    ) -> impl Iterator<Item = (&'static str, Option<&'static [&'static str]>, Option<(&'static str, Option<&'static str>)>)> + '_ {
        self.by_name.iter().map(|(name, r)| (*name, (r.arguments)(), r.schedule))
    }

    /// Every registered workflow's name and source hash, by name.
    pub(crate) fn sources(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.by_name.iter().map(|(name, r)| (*name, (r.source)()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! workflow_named {
        ($ty:ident, $name:literal) => {
            struct $ty;
            impl Workflow for $ty {
                const NAME: &'static str = $name;
                type Args = ();
                type Output = ();
                fn run(_: ()) -> BoxFuture<'static, Result<()>> {
                    Box::pin(async { Ok(()) })
                }
            }
        };
    }
    workflow_named!(ChargeCard, "registry_test_charge");
    workflow_named!(ChargeCardAgain, "registry_test_charge");

    #[test]
    fn two_workflows_under_one_name_are_refused_with_both_named() {
        let err = Registry::collect(&[Registration::of::<ChargeCard>(), Registration::of::<ChargeCardAgain>()]).err().expect("refused");
        match &err {
            Error::DuplicateWorkflow { name, first, second } => {
                assert_eq!(name, "registry_test_charge");
                assert!(first.ends_with("ChargeCard") && second.ends_with("ChargeCardAgain"), "{first} / {second}");
            }
            other => panic!("unexpected error: {other}"),
        }
        assert!(err.to_string().contains("name = "), "the message says how to fix it: {err}");
    }

    #[test]
    fn one_type_registered_twice_counts_once() {
        let registry = Registry::collect(&[Registration::of::<ChargeCard>(), Registration::of::<ChargeCard>()]).expect("accepted");
        assert_eq!(registry.names().filter(|n| *n == "registry_test_charge").count(), 1);
    }
}
