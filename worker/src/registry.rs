//! The workflows this process can run, by name, so that recovered and queued workflows can be
//! started from their stored name and inputs.
//!
//! `#[mainstay::workflow]` registers each workflow at link time (through `inventory`); code
//! without macros registers with [`crate::MainstayBuilder::register`].

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::app::Runtime;
use crate::sysdb::Claimed;
use crate::workflow::{run_claimed, Workflow};

type Runner = fn(Arc<Runtime>, Claimed) -> BoxFuture<'static, ()>;

/// A registered workflow: its name, a type-erased runner, and the cron schedule (with its time
/// zone) it runs on, if it is a scheduled workflow.
#[derive(Clone, Copy)]
pub struct Registration {
    pub(crate) name: fn() -> &'static str,
    pub(crate) source: fn() -> u64,
    pub(crate) arguments: fn() -> Option<&'static [&'static str]>,
    pub(crate) runner: Runner,
    pub(crate) schedule: Option<(&'static str, Option<&'static str>)>,
}

impl Registration {
    /// The registration of workflow type `W`.
    pub const fn of<W: Workflow>() -> Registration {
        Registration { name: name_of::<W>, source: source_of::<W>, arguments: arguments_of::<W>, runner: run_claimed::<W>, schedule: None }
    }

    /// The registration of workflow type `W`, run at every tick of `cron` (5 fields, or 6 with
    /// seconds first) in time zone `zone` (IANA; `None` for UTC). `W` takes
    /// `(scheduled_at, context)`, as every scheduled workflow does: the tick
    /// (`chrono::DateTime<Utc>`) and the schedule's context, any `DeserializeOwned` type
    /// (`null` for a schedule declared in code, so `serde_json::Value`, `Option<T>` or `()`).
    /// Its schedule is named `{app}.{workflow}` for an application with a name
    /// ([`crate::Config::app_name`]), else after the workflow.
    pub const fn scheduled<W: Workflow>(cron: &'static str, zone: Option<&'static str>) -> Registration {
        Registration {
            name: name_of::<W>,
            source: source_of::<W>,
            arguments: arguments_of::<W>,
            runner: run_claimed::<W>,
            schedule: Some((cron, zone)),
        }
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
    /// Everything registered by the macros, plus `extra`.
    pub(crate) fn collect(extra: &[Registration]) -> Registry {
        let mut by_name = BTreeMap::new();
        for r in inventory::iter::<Registration> {
            by_name.insert((r.name)(), *r);
        }
        for r in extra {
            by_name.insert((r.name)(), *r);
        }
        Registry { by_name }
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
