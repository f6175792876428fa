//! Cron ticks of a Schedule: the tick that is due now and catch-up within the starting
//! deadline. Parsing, time zones and the deterministic workflow ID of a tick are the SDK's
//! (`mainstay::CronSchedule`), shared with in-process schedules.
//!
//! After downtime, every tick missed within `startingDeadlineSeconds` runs (each under its own
//! workflow ID, so at most once), and ticks older than the deadline are reported as missed, not
//! run. Without a deadline only the most recent missed tick runs, as the CronJob controller
//! does: a long outage never replays a backlog. Ticks are computed in the schedule's time zone, so a daily 02:30 in a
//! zone with DST runs once on the days the clock skips or repeats that hour.

use chrono::{DateTime, Duration, TimeZone, Utc};

pub use mainstay::{format_tick as rfc3339_offset, tick_workflow_id, CronSchedule, InvalidSchedule};

/// More missed ticks than this are reported as too many (the latest still runs if in time).
pub const TOO_MANY_MISSED: usize = 100;
/// Most ticks caught up in one reconcile (the newest ones within the starting deadline).
pub const MAX_CATCH_UP: usize = 100;

/// The operator's catch-up policy on top of the SDK's cron schedules.
pub trait Plan {
    /// What to do at `now`, given the last tick already handled (or the creation time).
    fn plan(&self, last: DateTime<Utc>, now: DateTime<Utc>, deadline: Option<Duration>) -> TickPlan;
}

impl Plan for CronSchedule {
    /// With a starting deadline every tick missed within it is due, oldest first (at most
    /// [`MAX_CATCH_UP`], the newest): each has its own workflow ID, so catching up never runs a
    /// tick twice, and a restart of the operator loses none. Without a deadline only the most
    /// recent missed tick runs, as the CronJob controller does.
    fn plan(&self, last: DateTime<Utc>, now: DateTime<Utc>, deadline: Option<Duration>) -> TickPlan {
        // Count the ticks missed since `last`, but never walk more than needed to know there
        // were too many.
        let mut missed = 0usize;
        let mut cursor = last;
        while let Some(t) = self.next_after(cursor) {
            if t > now || missed > TOO_MANY_MISSED {
                break;
            }
            missed += 1;
            cursor = t;
        }
        let (due, late) = if missed == 0 {
            (Vec::new(), None)
        } else {
            match deadline {
                None => (self.latest_between(last, now).into_iter().collect(), None),
                Some(d) => {
                    let window_start = now - d;
                    let due = if window_start >= now { Vec::new() } else { newest_ticks(self, last.max(window_start), now, MAX_CATCH_UP) };
                    let late = if window_start > last { self.latest_between(last, window_start) } else { None };
                    (due, late)
                }
            }
        };
        TickPlan {
            skipped: missed.saturating_sub(due.len()),
            due,
            missed_beyond_deadline: late,
            too_many_missed: missed > TOO_MANY_MISSED,
            next: self.next_after(now),
        }
    }
}

/// The newest `cap` ticks in `(floor, now]`, oldest first, found by widening a window back
/// from `now` so a long window of a frequent schedule is not walked tick by tick.
fn newest_ticks(cron: &CronSchedule, floor: DateTime<Utc>, now: DateTime<Utc>, cap: usize) -> Vec<DateTime<Utc>> {
    let mut width = Duration::seconds(1);
    loop {
        let start = (now - width).max(floor);
        let mut ticks = Vec::new();
        let mut cursor = start;
        while let Some(t) = cron.next_after(cursor).filter(|t| *t <= now) {
            ticks.push(t);
            cursor = t;
        }
        if ticks.len() >= cap || start == floor {
            let skip = ticks.len().saturating_sub(cap);
            return ticks.split_off(skip);
        }
        width = width * 2;
    }
}

/// The decision for one reconcile of a Schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickPlan {
    /// The ticks to fire now, oldest first.
    pub due: Vec<DateTime<Utc>>,
    /// The most recent tick too old to run (beyond the deadline): report it as missed.
    pub missed_beyond_deadline: Option<DateTime<Utc>>,
    /// Missed ticks that will not run.
    pub skipped: usize,
    /// More than [`TOO_MANY_MISSED`] ticks were missed.
    pub too_many_missed: bool,
    /// When to look again.
    pub next: Option<DateTime<Utc>>,
}

/// A UTC instant from RFC 3339 text (status fields).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

/// Convenience for tests and callers holding naive UTC parts.
pub fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().expect("valid UTC time")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_due_tick_is_the_latest_one_and_older_ones_are_skipped() {
        let s = CronSchedule::parse("*/10 * * * *", None).unwrap();
        let plan = s.plan(utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 0, 35, 10), None);
        assert_eq!(plan.due, vec![utc(2026, 1, 1, 0, 30, 0)]);
        assert_eq!(plan.skipped, 2, "without a deadline 00:10 and 00:20 are not replayed");
        assert_eq!(plan.next, Some(utc(2026, 1, 1, 0, 40, 0)));
        // Nothing due between ticks.
        let idle = s.plan(utc(2026, 1, 1, 0, 30, 0), utc(2026, 1, 1, 0, 35, 0), None);
        assert_eq!((idle.due.len(), idle.skipped), (0, 0));
    }

    #[test]
    fn a_tick_older_than_the_deadline_is_reported_not_run() {
        let s = CronSchedule::parse("0 * * * *", None).unwrap();
        let now = utc(2026, 1, 1, 3, 10, 0);
        let plan = s.plan(utc(2026, 1, 1, 0, 0, 0), now, Some(Duration::seconds(300)));
        assert!(plan.due.is_empty());
        assert_eq!(plan.missed_beyond_deadline, Some(utc(2026, 1, 1, 3, 0, 0)));
        let plan = s.plan(utc(2026, 1, 1, 0, 0, 0), now, Some(Duration::seconds(900)));
        assert_eq!(plan.due, vec![utc(2026, 1, 1, 3, 0, 0)]);
        assert_eq!(plan.missed_beyond_deadline, Some(utc(2026, 1, 1, 2, 0, 0)));
        assert_eq!(plan.skipped, 2, "01:00 and 02:00 are beyond the deadline");
    }

    #[test]
    fn too_many_missed_ticks_still_run_the_latest() {
        let s = CronSchedule::parse("* * * * * *", None).unwrap();
        let plan = s.plan(utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 1, 0, 0), None);
        assert!(plan.too_many_missed);
        assert_eq!(plan.due, vec![utc(2026, 1, 1, 1, 0, 0)]);
        // With a deadline the newest MAX_CATCH_UP ticks within it run, oldest first.
        let plan = s.plan(utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 1, 0, 0), Some(Duration::seconds(600)));
        assert_eq!(plan.due.len(), MAX_CATCH_UP);
        assert_eq!(plan.due.first(), Some(&(utc(2026, 1, 1, 1, 0, 0) - Duration::seconds(MAX_CATCH_UP as i64 - 1))));
        assert_eq!(plan.due.last(), Some(&utc(2026, 1, 1, 1, 0, 0)));
        assert!(plan.due.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn every_tick_missed_within_the_deadline_is_caught_up_once() {
        // An every-second schedule; the operator was down from :05 to :12 (last fired :05).
        let s = CronSchedule::parse("* * * * * *", None).unwrap();
        let plan = s.plan(utc(2026, 1, 1, 0, 0, 5), utc(2026, 1, 1, 0, 0, 12), Some(Duration::seconds(30)));
        let want: Vec<_> = (6..=12).map(|sec| utc(2026, 1, 1, 0, 0, sec)).collect();
        assert_eq!(plan.due, want);
        assert_eq!((plan.skipped, plan.missed_beyond_deadline), (0, None));
        // Planning again from the last due tick finds nothing new: no tick fires twice.
        let again = s.plan(utc(2026, 1, 1, 0, 0, 12), utc(2026, 1, 1, 0, 0, 12), Some(Duration::seconds(30)));
        assert!(again.due.is_empty());
        // Only the part of an outage within the deadline is caught up; the rest is reported.
        let plan = s.plan(utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 0, 1, 0), Some(Duration::seconds(10)));
        assert_eq!(plan.due.first(), Some(&utc(2026, 1, 1, 0, 0, 51)));
        assert_eq!(plan.due.len(), 10);
        assert_eq!(plan.missed_beyond_deadline, Some(utc(2026, 1, 1, 0, 0, 50)));
        assert_eq!(plan.skipped, 50);
    }

    #[test]
    fn time_zones_and_daylight_saving_are_respected() {
        // 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer.
        let s = CronSchedule::parse("0 9 * * *", Some("Europe/Paris")).unwrap();
        assert_eq!(s.next_after(utc(2026, 1, 10, 0, 0, 0)), Some(utc(2026, 1, 10, 8, 0, 0)));
        assert_eq!(s.next_after(utc(2026, 7, 10, 0, 0, 0)), Some(utc(2026, 7, 10, 7, 0, 0)));
        // 02:30 does not exist in Paris on 2026-03-29 (clocks jump 02:00 -> 03:00): that day
        // has no such tick, and the next is the following day's.
        let s = CronSchedule::parse("30 2 * * *", Some("Europe/Paris")).unwrap();
        let next = s.next_after(utc(2026, 3, 28, 12, 0, 0)).unwrap();
        assert_eq!(next, utc(2026, 3, 30, 0, 30, 0));
        // On 2026-10-25 02:30 happens twice; it must fire once that day.
        let mut t = utc(2026, 10, 24, 12, 0, 0);
        let mut that_day = 0;
        while let Some(n) = s.next_after(t) {
            if n > utc(2026, 10, 25, 12, 0, 0) {
                break;
            }
            that_day += 1;
            t = n;
        }
        assert_eq!(that_day, 1);
    }
}
