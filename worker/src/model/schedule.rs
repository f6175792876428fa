//! Schedules: cron expressions in IANA time zones, their ticks, and the schedules stored in
//! DBOS's `workflow_schedules` table.
//!
//! Invariants: a tick's workflow ID is `sched-{schedule}-{tick}` (the tick in ISO 8601 with its
//! UTC offset, as DBOS writes it), so however many processes fire a tick, one workflow runs.
//! Every path that runs a schedule's workflow (the in-process scheduler, trigger, backfill, a
//! Kubernetes `Schedule`) calls it with the one contract `(scheduled_at, context)`, as DBOS's
//! stored schedules do: the tick, written exactly as in its workflow ID, and the schedule's
//! context (JSON, `null` when it has none). Both are fixed in the enqueued row, so a replay
//! sees the same values. A context that is not JSON (a DBOS Python schedule stored with
//! pickle) is never passed as something else: such a schedule does not fire, and triggering or
//! backfilling it is an error.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::Serialize;

use crate::model::error::{Error, Result};
use crate::model::serialization::encode;

/// A cron expression or time zone that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSchedule(pub String);

/// The fields of a cron expression, seconds first: their names in messages and what they take.
const FIELDS: [(&str, &str); 6] = [
    ("second", "use 0-59, with ranges (0-29), lists (0,15,30,45) and steps (*/10)"),
    ("minute", "use 0-59, with ranges (0-29), lists (0,15,30,45) and steps (*/15)"),
    ("hour", "use 0-23, with ranges (9-17), lists (9,13,17) and steps (*/2)"),
    ("day-of-month", "use 1-31, with ranges (1-15), lists (1,15) and steps (*/2)"),
    ("month", "use 1-12 or JAN-DEC, with ranges (3-5), lists (1,4,7,10) and steps (*/3)"),
    ("day-of-week", "use 0-7 (0 and 7 are Sunday) or SUN-SAT, with ranges (1-5), lists (1,3,5) and steps (*/2)"),
];
const DAY_OF_MONTH: usize = 3;
const MONTH: usize = 4;
const DAY_OF_WEEK: usize = 5;

/// Month and weekday names: their first three letters or more (JAN, Sept, thurs, Monday).
const MONTHS: [&str; 12] =
    ["JANUARY", "FEBRUARY", "MARCH", "APRIL", "MAY", "JUNE", "JULY", "AUGUST", "SEPTEMBER", "OCTOBER", "NOVEMBER", "DECEMBER"];
const WEEKDAYS: [&str; 7] = ["SUNDAY", "MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY"];

fn name_index(names: &[&str], word: &str) -> Option<usize> {
    names.iter().position(|name| word.len() >= 3 && name.starts_with(word))
}

const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const FORMS: &str = "use 5 (minute hour day-of-month month day-of-week), 6 (second minute hour \
                     day-of-month month day-of-week) or a macro such as @hourly";

/// Standard (POSIX/Vixie) cron: 0 and 7 are Sunday, a day matching either a restricted
/// day-of-month or a restricted day-of-week fires, an optional seconds field comes first, no
/// year field. `0/15` is read as `0-59/15`, as the `cron` crate used before did.
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .dom_and_dow(false)
        .alternative_weekdays(false)
        .sloppy_ranges(true)
        .build()
}

/// Field `index` (seconds first) with its month or weekday names replaced by numbers, or None
/// when it holds a character or a name that field does not take.
fn field_numbers(index: usize, text: &str) -> Option<String> {
    let text = text.to_ascii_uppercase();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        // Digits and operators, `?` in either day field, `#` (nth weekday) in day-of-week.
        let operator = matches!(c, '*' | ',' | '-' | '/')
            || c == '?' && (index == DAY_OF_MONTH || index == DAY_OF_WEEK)
            || c == '#' && index == DAY_OF_WEEK;
        if c.is_ascii_digit() || operator {
            out.push(c);
        } else if c.is_ascii_alphabetic() {
            let mut end = start + 1;
            while let Some((i, _)) = chars.next_if(|(_, c)| c.is_ascii_alphabetic()) {
                end = i + 1;
            }
            let word = &text[start..end];
            let after_dash = out.ends_with('-');
            match index {
                MONTH => out.push_str(&(name_index(&MONTHS, word)? + 1).to_string()),
                DAY_OF_WEEK if word == "L" => out.push('L'),
                DAY_OF_WEEK => match name_index(&WEEKDAYS, word)? {
                    // Sunday closing a range is 7, so FRI-SUN is Friday to Sunday.
                    0 if after_dash => out.push('7'),
                    day => out.push_str(&day.to_string()),
                },
                DAY_OF_MONTH if matches!(word, "L" | "W" | "LW") => out.push_str(word),
                _ => return None,
            }
        } else {
            return None;
        }
    }
    Some(out)
}

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    schedule: Cron,
    zone: Tz,
}

impl CronSchedule {
    /// Parses 5 fields (minute first), 6 fields (seconds first) or a macro (`@hourly`, …), in
    /// an IANA time zone (default UTC). Standard cron: day-of-week 0 and 7 are Sunday, names
    /// (JAN-DEC, SUN-SAT) in any case, and when both day-of-month and day-of-week are
    /// restricted a day matching either fires. Errors quote the expression and name the field.
    pub fn parse(expr: &str, zone: Option<&str>) -> std::result::Result<CronSchedule, InvalidSchedule> {
        let expr = expr.trim();
        if expr.contains("TZ=") {
            return Err(InvalidSchedule(format!("schedule {expr:?} embeds a time zone; give the time zone separately")));
        }
        let body = if expr.starts_with('@') {
            let known = MACROS.iter().find(|(name, _)| name.eq_ignore_ascii_case(expr));
            match known {
                Some((_, body)) => *body,
                None => {
                    return Err(InvalidSchedule(format!(
                        "schedule {expr:?} is not a known macro; use @yearly, @annually, @monthly, \
                         @weekly, @daily, @midnight or @hourly"
                    )))
                }
            }
        } else {
            expr
        };
        let given: Vec<&str> = body.split_whitespace().collect();
        let fields: Vec<&str> = match given.len() {
            0 => return Err(InvalidSchedule(format!("schedule {expr:?} is empty; {FORMS}"))),
            5 => std::iter::once("0").chain(given.iter().copied()).collect(),
            6 => given,
            1 => return Err(InvalidSchedule(format!("schedule {expr:?} has 1 field; {FORMS}"))),
            n => return Err(InvalidSchedule(format!("schedule {expr:?} has {n} fields; {FORMS}"))),
        };
        let wrong = |index: usize| {
            let (name, allowed) = FIELDS[index];
            InvalidSchedule(format!("schedule {expr:?}: the {name} field {:?} is not valid; {allowed}", fields[index]))
        };
        let mut numeric = Vec::with_capacity(6);
        for (index, text) in fields.iter().enumerate() {
            numeric.push(field_numbers(index, text).ok_or_else(|| wrong(index))?);
        }
        // Each field alone, every other field `*`: the first that fails is the one to name.
        for index in 0..6 {
            let mut probe = ["*"; 6];
            probe[index] = &numeric[index];
            if parser().parse(&probe.join(" ")).is_err() {
                return Err(wrong(index));
            }
        }
        let schedule = parser()
            .parse(&numeric.join(" "))
            .map_err(|_| InvalidSchedule(format!("schedule {expr:?} is not a valid cron expression; {FORMS}")))?;
        let zone = match zone {
            None | Some("") => Tz::UTC,
            Some(z) => z
                .parse::<Tz>()
                .map_err(|_| InvalidSchedule(format!("time zone {z:?} is not an IANA time zone name (for example Europe/Paris or UTC)")))?,
        };
        let parsed = CronSchedule { schedule, zone };
        // Fields that are each valid can still rule out every date (`0 0 30 2 *`). croner looks
        // up to the year 5000 (a few tens of milliseconds), so rare dates such as a fifth Monday
        // in February still count.
        if parsed.next_after(Utc::now()).is_none() {
            return Err(InvalidSchedule(format!(
                "schedule {expr:?} never fires: no date matches its day-of-month, month and \
                 day-of-week fields together"
            )));
        }
        Ok(parsed)
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut cursor = t.with_timezone(&self.zone);
        loop {
            let next = self.schedule.find_next_occurrence(&cursor, false).ok()?;
            // A time a daylight-saving jump skips has no tick that day: croner moves it to the
            // end of the gap, where the wall clock no longer matches the expression.
            if self.schedule.is_time_matching(&next).unwrap_or(false) {
                return Some(next.with_timezone(&Utc));
            }
            cursor = next;
        }
    }

    /// The ticks in `(after, until]`, oldest first, at most `cap` (the oldest ones).
    pub fn ticks_between(&self, after: DateTime<Utc>, until: DateTime<Utc>, cap: usize) -> Vec<DateTime<Utc>> {
        let mut ticks = Vec::new();
        let mut cursor = after;
        while ticks.len() < cap {
            match self.next_after(cursor) {
                Some(t) if t <= until => {
                    ticks.push(t);
                    cursor = t;
                }
                _ => break,
            }
        }
        ticks
    }

    /// The latest tick in `(floor, now]`, found by widening a window back from `now`, so a
    /// long outage of a frequent schedule costs a handful of steps, not one per missed tick.
    pub fn latest_between(&self, floor: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut width = chrono::Duration::seconds(1);
        loop {
            let start = (now - width).max(floor);
            if let Some(first) = self.next_after(start).filter(|t| *t <= now) {
                let mut latest = first;
                while let Some(t) = self.next_after(latest).filter(|t| *t <= now) {
                    latest = t;
                }
                return Some(latest);
            }
            if start == floor {
                return None;
            }
            width = width * 2;
        }
    }
}

/// A tick as DBOS writes it: `2026-01-31T23:00:15+00:00` (seconds unless it has a fraction).
pub fn format_tick(t: DateTime<Utc>) -> String {
    let fixed = t.with_timezone(&chrono::FixedOffset::east_opt(0).expect("zero is a valid offset"));
    fixed.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// The workflow ID of a tick: `sched-{schedule}-{tick}`.
pub fn tick_workflow_id(schedule_name: &str, tick: DateTime<Utc>) -> String {
    format!("sched-{schedule_name}-{}", format_tick(tick))
}

/// Whether a schedule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum ScheduleStatus {
    #[default]
    Active,
    Paused,
}

impl ScheduleStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ScheduleStatus::Active => "ACTIVE",
            ScheduleStatus::Paused => "PAUSED",
        }
    }

    pub(crate) fn parse(s: &str) -> ScheduleStatus {
        if s.eq_ignore_ascii_case("PAUSED") {
            ScheduleStatus::Paused
        } else {
            ScheduleStatus::Active
        }
    }
}

/// A schedule: run workflow `workflow_name` at every tick of `cron` in `time_zone`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    /// Unique name; part of every tick's workflow ID.
    pub name: String,
    pub workflow_name: String,
    /// 5 fields, 6 fields (seconds first) or a macro such as `@daily`.
    pub cron: String,
    /// IANA time zone of the cron expression (default UTC).
    pub time_zone: Option<String>,
    /// The queue ticks are enqueued on (default: the internal queue).
    pub queue: Option<String>,
    pub status: ScheduleStatus,
    /// After downtime, fire the ticks missed since the last fire (at most 100). Off by
    /// default: missed ticks are skipped, and [`Client::backfill_schedule`](crate::Client::backfill_schedule)
    /// runs them on request.
    pub automatic_backfill: bool,
    /// The last tick fired (as in its workflow ID).
    pub last_fired_at: Option<String>,
    /// Passed to every run as the workflow's second argument (`null` when the schedule has
    /// none). Stored as compact JSON in DBOS's `context` column.
    pub context: serde_json::Value,
    /// The stored context, as stored, when it is not JSON (a DBOS Python schedule created
    /// without portable serialization stores a pickle). Such a schedule does not fire and
    /// cannot be triggered or backfilled: recreate it with a JSON context. `None` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable_context: Option<String>,
    /// The application whose workers run its ticks (`None`: any application that has the
    /// workflow). [`Client::create_schedule`](crate::Client::create_schedule) uses the client's
    /// application when this is `None`.
    pub application_name: Option<String>,
}

impl Schedule {
    /// An active schedule of `workflow_name` on `cron`, in UTC, on the internal queue.
    pub fn new(name: impl Into<String>, workflow_name: impl Into<String>, cron: impl Into<String>) -> Schedule {
        Schedule {
            name: name.into(),
            workflow_name: workflow_name.into(),
            cron: cron.into(),
            time_zone: None,
            queue: None,
            status: ScheduleStatus::Active,
            automatic_backfill: false,
            last_fired_at: None,
            context: serde_json::Value::Null,
            unreadable_context: None,
            application_name: None,
        }
    }

    /// The context every run receives as its second argument (any JSON value).
    pub fn context(mut self, value: serde_json::Value) -> Schedule {
        self.context = value;
        self.unreadable_context = None;
        self
    }

    pub fn time_zone(mut self, zone: impl Into<String>) -> Schedule {
        self.time_zone = Some(zone.into());
        self
    }

    pub fn queue(mut self, queue: impl Into<String>) -> Schedule {
        self.queue = Some(queue.into());
        self
    }

    /// Checks the schedule and parses its cron expression; errors name the field. A schedule
    /// whose stored context is not JSON is an [`Error::UnsupportedSerialization`].
    pub fn validate(&self) -> Result<CronSchedule> {
        if self.name.trim().is_empty() {
            return Err(Error::InvalidArgument("a schedule needs a name".into()));
        }
        if self.workflow_name.trim().is_empty() {
            return Err(Error::InvalidArgument(format!("schedule {}: the workflow name is empty", self.name)));
        }
        self.readable_context()?;
        CronSchedule::parse(&self.cron, self.time_zone.as_deref())
            .map_err(|e| Error::InvalidArgument(format!("schedule {}: {e}", self.name)))
    }

    /// The context runs receive, or the error that the stored one cannot be read.
    fn readable_context(&self) -> Result<&serde_json::Value> {
        match &self.unreadable_context {
            None => Ok(&self.context),
            Some(stored) => Err(Error::UnsupportedSerialization {
                what: format!("the context of schedule {}", self.name),
                // Only to name it in the message: a base64 pickle (protocol 2 to 5) starts so.
                format: if stored.starts_with("gA") { "py_pickle" } else { "unknown (not JSON)" }.into(),
            }),
        }
    }

    /// The ID and inputs of the workflow that runs tick `tick`: its arguments are
    /// `(tick, context)`, the tick written as in the ID; the inputs are at most `limit` bytes.
    pub(crate) fn tick_inputs(&self, tick: DateTime<Utc>, limit: usize) -> Result<(String, String)> {
        let id = tick_workflow_id(&self.name, tick);
        let inputs = encode(
            &serde_json::json!({"positionalArgs": [format_tick(tick), self.readable_context()?], "namedArgs": {}}),
            &format!("the inputs of workflow {id}"),
            limit,
        )?;
        Ok((id, inputs))
    }
}

/// Parses a tick back from its text (as stored in `last_fired_at`).
pub(crate) fn parse_tick(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

/// The current time at millisecond precision, the precision ticks and their IDs are written in.
pub(crate) fn now_utc() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(crate::model::clock::now_ms()).single().unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Weekday};

    const LIMIT: usize = crate::model::config::DEFAULT_MAX_PAYLOAD_BYTES;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap()
    }

    #[test]
    fn five_six_fields_and_macros_parse_and_bad_input_is_explained() {
        assert!(CronSchedule::parse("*/5 * * * *", None).is_ok());
        assert!(CronSchedule::parse("*/10 * * * * *", Some("UTC")).is_ok());
        assert!(CronSchedule::parse("@hourly", Some("Europe/Paris")).is_ok());
        let e = CronSchedule::parse("* * *", None).unwrap_err().0;
        assert!(e.contains("3 fields"), "{e}");
        let e = CronSchedule::parse("61 * * * *", None).unwrap_err().0;
        assert!(e.contains("the minute field \"61\""), "{e}");
        let e = CronSchedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err().0;
        assert!(e.contains("IANA"), "{e}");
        let e = CronSchedule::parse("CRON_TZ=UTC * * * * *", None).unwrap_err().0;
        assert!(e.contains("time zone separately"), "{e}");
    }

    /// The weekdays `expr` fires on in the week of Monday 2026-01-05, in order, each at the
    /// time `at` (UTC).
    fn weekdays(expr: &str, at: (u32, u32, u32)) -> Vec<Weekday> {
        let s = CronSchedule::parse(expr, None).unwrap();
        let ticks = s.ticks_between(utc(2026, 1, 4, 23, 59, 59), utc(2026, 1, 11, 23, 59, 59), 100);
        for t in &ticks {
            assert_eq!((t.hour(), t.minute(), t.second()), at, "{expr} fired at {t}");
        }
        ticks.iter().map(|t| t.weekday()).collect()
    }

    #[test]
    fn day_of_week_numbers_are_standard_cron() {
        use Weekday::*;
        assert_eq!(weekdays("0 9 * * 1", (9, 0, 0)), [Mon]);
        assert_eq!(weekdays("0 9 * * 0", (9, 0, 0)), [Sun]);
        assert_eq!(weekdays("0 9 * * 7", (9, 0, 0)), [Sun]);
        assert_eq!(weekdays("0 9 * * 6", (9, 0, 0)), [Sat]);
        assert_eq!(weekdays("0 9 * * 1-5", (9, 0, 0)), [Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(weekdays("0 9 * * 5-7", (9, 0, 0)), [Fri, Sat, Sun]);
        assert_eq!(weekdays("0 9 * * 1,3,5", (9, 0, 0)), [Mon, Wed, Fri]);
        assert_eq!(weekdays("0 9 * * */2", (9, 0, 0)), [Tue, Thu, Sat, Sun]);
        assert_eq!(weekdays("0 9 * * 1-5/2", (9, 0, 0)), [Mon, Wed, Fri]);
        assert_eq!(weekdays("0 9 * * *", (9, 0, 0)), [Mon, Tue, Wed, Thu, Fri, Sat, Sun]);
        // The weekday is the one of the schedule's time zone: Monday 01:00 in Tokyo is Sunday
        // in UTC.
        let s = CronSchedule::parse("0 1 * * 1", Some("Asia/Tokyo")).unwrap();
        assert_eq!(s.next_after(utc(2026, 1, 5, 0, 0, 0)), Some(utc(2026, 1, 11, 16, 0, 0)));
    }

    #[test]
    fn day_of_week_names_in_any_case() {
        use Weekday::*;
        assert_eq!(weekdays("0 9 * * MON-FRI", (9, 0, 0)), [Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(weekdays("0 9 * * sun", (9, 0, 0)), [Sun]);
        assert_eq!(weekdays("0 9 * * Sat,Sun", (9, 0, 0)), [Sat, Sun]);
        assert_eq!(weekdays("0 9 * * fri-sun", (9, 0, 0)), [Fri, Sat, Sun]);
        assert_eq!(weekdays("0 9 * * mon,WED-thu", (9, 0, 0)), [Mon, Wed, Thu]);
        // A month name is not a weekday, nor a weekday name a month.
        let e = CronSchedule::parse("0 9 * * JAN", None).unwrap_err().0;
        assert!(e.contains("the day-of-week field \"JAN\""), "{e}");
        let e = CronSchedule::parse("0 9 * MON *", None).unwrap_err().0;
        assert!(e.contains("the month field \"MON\""), "{e}");
        // Longer names, as the `cron` crate took them.
        assert_eq!(weekdays("0 9 * * Monday-Wednesday,thurs", (9, 0, 0)), [Mon, Tue, Wed, Thu]);
        let e = CronSchedule::parse("0 9 * * MONTAG", None).unwrap_err().0;
        assert!(e.contains("the day-of-week field \"MONTAG\""), "{e}");
        assert!(CronSchedule::parse("0 9 * * MO", None).is_err());
    }

    #[test]
    fn six_fields_put_seconds_first() {
        use Weekday::*;
        assert_eq!(weekdays("30 15 9 * * 1", (9, 15, 30)), [Mon]);
        assert_eq!(weekdays("0 0 9 * * 0", (9, 0, 0)), [Sun]);
        let e = CronSchedule::parse("60 0 9 * * 1", None).unwrap_err().0;
        assert!(e.contains("the second field \"60\""), "{e}");
    }

    #[test]
    fn a_day_matching_either_day_field_fires() {
        // January 2026: the 13th is a Tuesday; the Fridays are the 2nd, 9th, 16th, 23rd, 30th.
        let days = |expr: &str| -> Vec<u32> {
            let s = CronSchedule::parse(expr, None).unwrap();
            s.ticks_between(utc(2025, 12, 31, 0, 0, 0), utc(2026, 1, 31, 0, 0, 0), 100).iter().map(|t| t.day()).collect()
        };
        assert_eq!(days("0 0 13 * 5"), [2, 9, 13, 16, 23, 30]);
        assert_eq!(days("0 0 13 * fri"), [2, 9, 13, 16, 23, 30]);
        assert_eq!(days("0 0 13 * *"), [13]);
        assert_eq!(days("0 0 * * 5"), [2, 9, 16, 23, 30]);
        assert_eq!(days("0 0 13 * ?"), [13]);
    }

    #[test]
    fn month_names_and_macros() {
        let months = |expr: &str| -> Vec<u32> {
            let s = CronSchedule::parse(expr, None).unwrap();
            s.ticks_between(utc(2025, 12, 31, 0, 0, 0), utc(2026, 12, 31, 0, 0, 0), 100).iter().map(|t| t.month()).collect()
        };
        assert_eq!(months("0 0 1 JAN,jul *"), [1, 7]);
        assert_eq!(months("0 0 1 mar-May *"), [3, 4, 5]);
        assert_eq!(months("0 0 1 January,Sept *"), [1, 9]);
        assert_eq!(months("0 0 1 */3 *"), [1, 4, 7, 10]);
        assert_eq!(months("@yearly"), [1]);
        assert_eq!(months("@monthly").len(), 12);
        assert_eq!(weekdays("@weekly", (0, 0, 0)), [Weekday::Sun]);
        assert_eq!(weekdays("@DAILY", (0, 0, 0)).len(), 7);
        let s = CronSchedule::parse("@hourly", None).unwrap();
        assert_eq!(s.next_after(utc(2026, 1, 5, 9, 0, 0)), Some(utc(2026, 1, 5, 10, 0, 0)));
        // A start without a range steps through the whole field, as before.
        let s = CronSchedule::parse("0/15 * * * *", None).unwrap();
        assert_eq!(s.next_after(utc(2026, 1, 5, 9, 0, 0)), Some(utc(2026, 1, 5, 9, 15, 0)));
    }

    #[test]
    fn errors_quote_the_expression_and_name_the_wrong_field() {
        let err = |expr: &str| CronSchedule::parse(expr, None).unwrap_err().0;
        assert_eq!(
            err("0 9 * * 8"),
            "schedule \"0 9 * * 8\": the day-of-week field \"8\" is not valid; use 0-7 (0 and 7 are \
             Sunday) or SUN-SAT, with ranges (1-5), lists (1,3,5) and steps (*/2)"
        );
        for (expr, field) in [
            ("61 * * * *", "the minute field \"61\""),
            ("*/0 * * * *", "the minute field \"*/0\""),
            ("0 24 * * *", "the hour field \"24\""),
            ("0 9-x * * *", "the hour field \"9-x\""),
            ("0 9 32 * *", "the day-of-month field \"32\""),
            ("0 9 0 * *", "the day-of-month field \"0\""),
            ("0 9 * 13 *", "the month field \"13\""),
            ("0 9 * DECEMBRE *", "the month field \"DECEMBRE\""),
            ("0 9 * * 1-8", "the day-of-week field \"1-8\""),
            ("0 9 * * +1", "the day-of-week field \"+1\""),
            ("0 61 25 * * *", "the minute field \"61\""),
        ] {
            let e = err(expr);
            assert!(e.starts_with(&format!("schedule {expr:?}: ")), "{e}");
            assert!(e.contains(&format!("{field} is not valid; use ")), "{e}");
            assert!(!e.contains('^') && !e.contains(&format!("0 {expr}")) && !e.contains("Pattern"), "{e}");
        }
        let e = err("0 9 * * * * 2026");
        assert!(e.starts_with("schedule \"0 9 * * * * 2026\" has 7 fields; use 5 (minute hour"), "{e}");
        assert!(err("   ").contains("is empty"));
        assert!(err("@every 5m").contains("not a known macro"));
        let e = err("0 0 30 2 *");
        assert!(e.starts_with("schedule \"0 0 30 2 *\" never fires"), "{e}");
        assert!(err("0 0 31 4,6,9,11 *").contains("never fires"));
        // A leap day fires, only every fourth year, and a fifth Monday in February every 28.
        assert!(CronSchedule::parse("0 0 29 2 *", None).is_ok());
        assert!(CronSchedule::parse("0 0 * 2 1#5", None).is_ok());
        assert_eq!(err("0 9 4"), format!("schedule \"0 9 4\" has 3 fields; {FORMS}"));
        assert!(err("daily").contains("has 1 field;"));
        // Whatever the input, an error and never a panic.
        for expr in [
            "@",
            "-",
            "* * * * -",
            ",,,,, *",
            "1-/2 * * * *",
            "5-1 * * * *",
            "*/99 * * * *",
            "é * * * *",
            "L L L L L",
            "# # # # #",
            "0 0 L * *",
            "0 0 * * 5#9",
            "0 0 * * 5L",
        ] {
            let _ = CronSchedule::parse(expr, None);
        }
    }

    #[test]
    fn ticks_between_are_bounded_and_ordered() {
        let s = CronSchedule::parse("*/10 * * * * *", None).unwrap();
        let ticks = s.ticks_between(utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 0, 1, 0), 100);
        assert_eq!(ticks.len(), 6);
        assert_eq!(ticks[0], utc(2026, 1, 1, 0, 0, 10));
        assert_eq!(s.ticks_between(utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 1, 0, 0), 3).len(), 3);
        assert_eq!(s.latest_between(utc(2026, 1, 1, 0, 0, 0), utc(2026, 1, 1, 0, 0, 55)), Some(utc(2026, 1, 1, 0, 0, 50)));
    }

    #[test]
    fn tick_ids_are_deterministic_and_dbos_shaped() {
        let t = utc(2026, 1, 31, 23, 0, 15);
        assert_eq!(tick_workflow_id("nightly", t), "sched-nightly-2026-01-31T23:00:15+00:00");
        assert_eq!(parse_tick("2026-01-31T23:00:15+00:00"), Some(t));
        let (id, inputs) = Schedule::new("nightly", "report", "0 3 * * *").tick_inputs(t, LIMIT).unwrap();
        assert_eq!(id, "sched-nightly-2026-01-31T23:00:15+00:00");
        assert_eq!(inputs, r#"{"namedArgs":{},"positionalArgs":["2026-01-31T23:00:15+00:00",null]}"#);
        let s = Schedule::new("nightly", "report", "0 3 * * *").context(serde_json::json!({"region": "eu"}));
        let (id, inputs) = s.tick_inputs(t + chrono::Duration::milliseconds(250), LIMIT).unwrap();
        assert_eq!(id, "sched-nightly-2026-01-31T23:00:15.250+00:00");
        assert_eq!(inputs, r#"{"namedArgs":{},"positionalArgs":["2026-01-31T23:00:15.250+00:00",{"region":"eu"}]}"#);
    }

    #[test]
    fn a_context_that_is_not_json_is_never_passed() {
        let mut s = Schedule::new("py", "report", "0 3 * * *");
        s.unreadable_context = Some("gAWVBAAAAAAAAABOLg==".into());
        let t = utc(2026, 1, 31, 23, 0, 15);
        for e in [s.validate().unwrap_err(), s.tick_inputs(t, LIMIT).unwrap_err()] {
            assert!(matches!(e, Error::UnsupportedSerialization { .. }), "{e}");
            assert!(e.to_string().contains("the context of schedule py is stored in the `py_pickle`"), "{e}");
        }
        assert!(s.context(serde_json::json!(1)).validate().is_ok(), "a new context replaces the unreadable one");
    }
}
