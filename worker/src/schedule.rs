//! Cron schedules: crontab(5) as users write it, computed by saffron, in a real time zone.
//!
//! Operators write Vixie cron. saffron 0.1 (the design card's parser) is a Quartz-flavoured
//! dialect that differs in ways that would silently change *when a job runs*: weekdays are 1–7
//! with 1 = Sunday (so a pasted `0 9 * * 1-5` would run Sunday–Thursday), there are no `@daily`
//! macros, surrounding spaces fail, its parse error names no field, and it knows only UTC. So this
//! module owns the syntax and the semantics, and uses saffron only for what it is good at — finding
//! the next matching minute in a bit-pattern expression:
//!
//! 1. [`parse_fields`] parses crontab(5) into one bit set per field, with an error that names the
//!    field, the text and what is allowed.
//! 2. The bit sets are rendered back as canonical saffron expressions (plain numbers, ranges and
//!    lists — no syntax where the dialects disagree), with weekdays shifted to saffron's 1–7.
//! 3. The day rule of crontab(5) — when day-of-month *and* day-of-week are both restricted (neither
//!    starts with `*`) a day matches if *either* matches, otherwise both must — is implemented
//!    explicitly with two saffron expressions (earlier of the two, or a leapfrog for "both") rather
//!    than relying on saffron's own rule, which decides "restricted" differently (`*/2` counts as
//!    restricted there, as unrestricted in Vixie cron).
//! 4. saffron's naive minutes are read as wall-clock times in `TZ` and mapped to instants the way
//!    cronie does around daylight-saving changes (see [`Schedule::next_after`]).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use saffron::Cron;

/// Why a schedule or zone was refused. The text names the field and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError(String);

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScheduleError {}

/// What a schedule may be, every form: the start of each error about one.
pub const EXPECTED: &str = "a cron expression: 5 fields (minute hour day-of-month month \
day-of-week) or one of @yearly @annually @monthly @weekly @daily @midnight @hourly";

/// What `expected` says in an error about a schedule (`CRON_SCHEDULE` or the `schedule`
/// subcommand's argument, which print the same text): [`EXPECTED`], then what is wrong.
pub fn expected_text(err: &ScheduleError) -> String {
    format!("{EXPECTED}; {err}")
}

/// Parses an IANA zone name (`UTC`, `Europe/Berlin`). The whole tz database is compiled in, because
/// scratch images have no `/usr/share/zoneinfo`. A leading `:` (POSIX `TZ=:Europe/Berlin`) is
/// accepted.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    let trimmed = name.trim();
    let trimmed = trimmed.strip_prefix(':').unwrap_or(trimmed);
    Tz::from_str(trimmed).map_err(|_| ZONE_EXPECTED.into())
}

/// What a zone may be.
pub const ZONE_EXPECTED: &str = "an IANA time zone name, exact case, such as UTC, Europe/Berlin \
or America/New_York (a leading ':' is allowed)";

/// One field of a crontab line.
#[derive(Debug, Clone, Copy)]
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// Three-letter names, the first standing for `min`.
    names: &'static [&'static str],
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
/// 0 and 7 are both Sunday, as in crontab(5).
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

impl FieldSpec {
    fn allowed(&self) -> String {
        match self.names {
            [] => format!("{}-{}", self.min, self.max),
            names => format!(
                "{}-{} or {}-{}",
                self.min,
                self.max,
                names[0],
                names[names.len() - 1]
            ),
        }
    }

    /// One value: a number or (for month and weekday) a three-letter name, any case.
    fn value(&self, token: &str, whole: &str) -> Result<u32, String> {
        if token.is_empty() {
            return Err("a range or step is missing a number".into());
        }
        if token.bytes().all(|b| b.is_ascii_digit()) {
            return match token.parse::<u32>() {
                Ok(v) if (self.min..=self.max).contains(&v) => Ok(v),
                _ if token == whole => Err(format!("value out of range {}", self.allowed())),
                _ => Err(format!("value {token} out of range {}", self.allowed())),
            };
        }
        if let Some(i) = self
            .names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(token))
        {
            return Ok(self.min + i as u32);
        }
        if token
            .bytes()
            .any(|b| matches!(b, b'L' | b'W' | b'#' | b'?'))
        {
            return Err(format!(
                "\"{token}\" is not crontab(5) syntax (Quartz's L, W, # and ? are not supported)"
            ));
        }
        if self.names.is_empty() {
            Err(format!("\"{token}\" is not a number {}", self.allowed()))
        } else {
            Err(format!(
                "\"{token}\" is not a number or name ({})",
                self.allowed()
            ))
        }
    }

    fn step(&self, token: &str) -> Result<u32, String> {
        match token.parse::<u32>() {
            Ok(s) if token.bytes().all(|b| b.is_ascii_digit()) && (1..=self.max).contains(&s) => {
                Ok(s)
            }
            _ => Err(format!("step \"{token}\" must be a number 1-{}", self.max)),
        }
    }

    /// Parses a comma list of `*`, `N`, `A-B`, with an optional `/STEP` on `*`, `A-B` and `N`
    /// (`N/STEP` means `N-max/STEP`, as most crons accept). Returns bit `v` set for each value.
    fn parse(&self, text: &str) -> Result<u64, ScheduleError> {
        self.parse_bits(text)
            .map_err(|why| ScheduleError(format!("{} field \"{}\": {}", self.name, text, why)))
    }

    fn parse_bits(&self, text: &str) -> Result<u64, String> {
        let mut bits = 0u64;
        for part in text.split(',') {
            if part.is_empty() {
                return Err("empty element in a list".into());
            }
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => (range, Some(self.step(step)?)),
                None => (part, None),
            };
            let (lo, hi) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (lo, hi) = (self.value(a, text)?, self.value(b, text)?);
                if lo > hi {
                    return Err(format!(
                        "range \"{range}\" runs backwards (crontab ranges do not wrap; use a list)"
                    ));
                }
                (lo, hi)
            } else {
                let v = self.value(range, text)?;
                (v, if step.is_some() { self.max } else { v })
            };
            let step = step.unwrap_or(1) as usize;
            for v in (lo..=hi).step_by(step) {
                bits |= 1 << v;
            }
        }
        Ok(bits)
    }
}

/// A crontab line reduced to bit sets, plus the flags Vixie cron derives from the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// Bit `m` for each minute 0–59.
    pub minutes: u64,
    /// Bit `h` for each hour 0–23.
    pub hours: u64,
    /// Bit `d` for each day of the month 1–31.
    pub days_of_month: u64,
    /// Bit `m` for each month 1–12.
    pub months: u64,
    /// Bit `d` for each weekday, 0 = Sunday … 6 = Saturday (a written 7 lands on bit 0).
    pub days_of_week: u64,
    /// The day-of-month field starts with `*` (Vixie's DOM_STAR: it does not "restrict").
    pub dom_star: bool,
    /// The day-of-week field starts with `*` (Vixie's DOW_STAR).
    pub dow_star: bool,
    /// The minute or hour field starts with `*` (cronie's MIN_STAR/HR_STAR). Such jobs follow the
    /// real clock across daylight-saving changes; the others are "fixed-time" jobs.
    pub wildcard: bool,
    /// The five field texts after macro expansion, for messages.
    text: [String; 5],
}

const ALL_DAYS_OF_MONTH: u64 = ((1u64 << 32) - 1) & !1;
const ALL_DAYS_OF_WEEK: u64 = 0x7f;

/// The macros of crontab(5). `@reboot` is refused with a pointer to `RUN_ON_START`.
fn expand_macro(word: &str) -> Result<&'static str, ScheduleError> {
    Ok(match word.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        "@reboot" => {
            return Err(ScheduleError(
                "@reboot is not a schedule for a long-running worker; RUN_ON_START=true runs the job at start"
                    .into(),
            ))
        }
        _ => {
            return Err(ScheduleError(format!(
                "unknown macro \"{word}\" (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
            )))
        }
    })
}

/// Parses a crontab(5) expression: five whitespace-separated fields or a macro, surrounding
/// whitespace ignored.
pub fn parse_fields(expr: &str) -> Result<Fields, ScheduleError> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(ScheduleError("the expression is empty".into()));
    }
    let expanded = if trimmed.starts_with('@') {
        if trimmed.split_whitespace().count() != 1 {
            return Err(ScheduleError(
                "a macro like @daily stands alone, without fields".into(),
            ));
        }
        expand_macro(trimmed)?
    } else {
        trimmed
    };
    let parts: Vec<&str> = expanded.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = parts[..] else {
        // The error's [`EXPECTED`] names the five fields already.
        let n = parts.len();
        return Err(ScheduleError(format!(
            "{n} {} instead of 5",
            if n == 1 { "field" } else { "fields" }
        )));
    };
    let dows = DAY_OF_WEEK.parse(dow)?;
    Ok(Fields {
        minutes: MINUTE.parse(minute)?,
        hours: HOUR.parse(hour)?,
        days_of_month: DAY_OF_MONTH.parse(dom)?,
        months: MONTH.parse(month)?,
        days_of_week: (dows & ALL_DAYS_OF_WEEK) | (dows >> 7 & 1),
        dom_star: dom.starts_with('*'),
        dow_star: dow.starts_with('*'),
        wildcard: minute.starts_with('*') || hour.starts_with('*'),
        text: [minute, hour, dom, month, dow].map(str::to_string),
    })
}

/// Renders a bit set as a saffron field: `*` when full, else ascending values and ranges.
/// `shift` maps our numbering onto saffron's (weekdays: +1).
fn render(bits: u64, min: u32, max: u32, shift: u32) -> String {
    let full = (min..=max).all(|v| bits & (1 << v) != 0);
    if full {
        return "*".into();
    }
    let mut out: Vec<String> = Vec::new();
    let mut v = min;
    while v <= max {
        if bits & (1 << v) == 0 {
            v += 1;
            continue;
        }
        let start = v;
        while v < max && bits & (1 << (v + 1)) != 0 {
            v += 1;
        }
        out.push(if start == v {
            format!("{}", start + shift)
        } else {
            format!("{}-{}", start + shift, v + shift)
        });
        v += 1;
    }
    out.join(",")
}

/// How the day fields combine, each side a saffron expression.
#[derive(Debug, Clone)]
enum Days {
    /// One expression says it all (at most one day field restricts).
    One(Cron),
    /// crontab(5): both day fields restricted — a day matches if either does.
    Either(Cron, Cron),
    /// Vixie cron: one day field starts with `*` but neither is full (`*/2` and `MON`) — a day
    /// must match both.
    Both(Cron, Cron),
}

/// Upper bound on candidate minutes examined for one answer; only a schedule that (nearly) never
/// fires could reach it, and [`Schedule::parse`] refuses those.
const MAX_STEPS: usize = 200_000;

/// A validated schedule in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    zone: Tz,
    wildcard: bool,
    days: Days,
    saffron: String,
}

impl Schedule {
    /// Parses `expr` (crontab(5)) for zone `zone`, refusing expressions that can never fire.
    pub fn parse(expr: &str, zone: Tz) -> Result<Schedule, ScheduleError> {
        let f = parse_fields(expr)?;
        let minute = render(f.minutes, 0, 59, 0);
        let hour = render(f.hours, 0, 23, 0);
        let month = render(f.months, 1, 12, 0);
        let dom = render(f.days_of_month, 1, 31, 0);
        let dow = render(f.days_of_week, 0, 6, 1);
        let dom_full = f.days_of_month == ALL_DAYS_OF_MONTH;
        let dow_full = f.days_of_week == ALL_DAYS_OF_WEEK;
        let line = |dom: &str, dow: &str| format!("{minute} {hour} {dom} {month} {dow}");
        let (days, saffron) = if f.dom_star || f.dow_star {
            // Vixie: an unrestricted field means "both must match".
            match (dom_full, dow_full) {
                (true, _) => DaysText::One(line("*", &dow)),
                (false, true) => DaysText::One(line(&dom, "*")),
                (false, false) => DaysText::Both(line(&dom, "*"), line("*", &dow)),
            }
        } else if dom_full || dow_full {
            // Either-match with a full field: every day.
            DaysText::One(line("*", "*"))
        } else {
            DaysText::Either(line(&dom, "*"), line("*", &dow))
        }
        .compile()?;
        // A day-of-month restriction that takes part must name a day some selected month has.
        let dom_matters = match &days {
            Days::One(_) => !dom_full && (f.dom_star || f.dow_star),
            Days::Both(..) => true,
            Days::Either(..) => false,
        };
        if dom_matters && !dom_fits_months(f.days_of_month, f.months) {
            return Err(ScheduleError(format!(
                "it never fires: no month in month field \"{}\" has a day in day-of-month field \"{}\"",
                f.text[3], f.text[2]
            )));
        }
        Ok(Schedule {
            expr: expr.trim().to_string(),
            zone,
            wildcard: f.wildcard,
            days,
            saffron,
        })
    }

    /// The expression as written (trimmed).
    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The saffron expression(s) this schedule runs on, for logs: `A`, `A | B` (either) or
    /// `A & B` (both).
    pub fn saffron(&self) -> &str {
        &self.saffron
    }

    /// True if the minute or hour field starts with `*` (the job follows the real clock over DST).
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The next wall-clock minute (in the zone, as a naive time) at or after `t` that the fields
    /// match, ignoring whether that wall-clock time exists.
    fn next_local_from(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let t = t.and_utc();
        let found = match &self.days {
            Days::One(c) => c.next_from(t),
            Days::Either(a, b) => match (a.next_from(t), b.next_from(t)) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            },
            Days::Both(a, b) => {
                // Leapfrog: each side jumps to its next match at or after the other's candidate,
                // until one candidate satisfies both.
                let mut t = t;
                let mut found = None;
                for _ in 0..MAX_STEPS {
                    let x = a.next_from(t)?;
                    if b.contains(x) {
                        found = Some(x);
                        break;
                    }
                    let y = b.next_from(x)?;
                    if a.contains(y) {
                        found = Some(y);
                        break;
                    }
                    t = y;
                }
                found
            }
        };
        found.map(|d| d.naive_utc())
    }

    /// The first fire instant strictly after `from`.
    ///
    /// Around daylight-saving changes this follows cronie:
    /// - a wall-clock time that does not exist (spring-forward gap): a fixed-time job runs once,
    ///   at the first instant after the gap; a wildcard job (`*` in minute or hour) has nothing
    ///   to run there — it follows the real clock;
    /// - a wall-clock time that occurs twice (fall-back): a fixed-time job runs at the first
    ///   occurrence only; a wildcard job runs in both.
    ///
    /// saffron yields candidate wall-clock minutes in order; each maps to zero, one or two
    /// instants. The earliest instant of successive candidates only grows, so the scan stops at
    /// the first candidate whose earliest instant is after `from`; it starts early enough (by the
    /// size of any nearby fall-back) that a repeated hour's second pass is not missed.
    pub fn next_after(&self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = from.with_timezone(&self.zone).naive_local();
        let start = local.with_second(0)?.with_nanosecond(0)? - self.lookback(from);
        let mut candidate = self.next_local_from(start)?;
        let mut best: Option<DateTime<Utc>> = None;
        for _ in 0..MAX_STEPS {
            let mut consider = |t: DateTime<Utc>| {
                if t > from && best.is_none_or(|b| t < b) {
                    best = Some(t);
                }
            };
            let earliest = match self.zone.from_local_datetime(&candidate) {
                chrono::LocalResult::Single(t) => {
                    consider(t.to_utc());
                    Some(t.to_utc())
                }
                chrono::LocalResult::Ambiguous(first, second) => {
                    consider(first.to_utc());
                    if self.wildcard {
                        consider(second.to_utc());
                    }
                    Some(first.to_utc())
                }
                chrono::LocalResult::None if self.wildcard => None,
                chrono::LocalResult::None => {
                    let t = self.gap_end(candidate)?;
                    consider(t);
                    Some(t)
                }
            };
            if earliest.is_some_and(|e| e > from) {
                return best;
            }
            candidate = self.next_local_from(candidate + Duration::minutes(1))?;
        }
        best
    }

    /// Fire instants after `from`, in order.
    pub fn iter_after(&self, from: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_after(from), move |t| self.next_after(*t))
    }

    /// How far before `from`'s wall-clock time a candidate may lie and still have an instant after
    /// `from`: the size of a fall-back near `from` (zero in UTC and most of the year).
    fn lookback(&self, from: DateTime<Utc>) -> Duration {
        let offset = |t: DateTime<Utc>| {
            self.zone
                .offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc() as i64
        };
        let now = offset(from);
        let min = [from - Duration::days(1), from, from + Duration::days(1)]
            .into_iter()
            .map(offset)
            .min()
            .unwrap_or(now);
        Duration::seconds((now - min).max(0))
    }

    /// The first instant after the gap that swallowed wall-clock time `t`: the earliest instant of
    /// the next wall-clock minute that exists (every zone's transitions since the 1970s fall on
    /// whole minutes, so this is the transition itself).
    fn gap_end(&self, t: NaiveDateTime) -> Option<DateTime<Utc>> {
        let mut next = t;
        for _ in 0..(2 * 24 * 60) {
            next += Duration::minutes(1);
            if let Some(first) = self.zone.from_local_datetime(&next).earliest() {
                return Some(first.to_utc());
            }
        }
        None
    }
}

/// A [`Days`] whose sides are still saffron source text.
enum DaysText {
    One(String),
    Either(String, String),
    Both(String, String),
}

impl DaysText {
    fn compile(self) -> Result<(Days, String), ScheduleError> {
        let cron = |s: &str| {
            s.parse::<Cron>().map_err(|_| {
                ScheduleError(format!(
                    "internal error: saffron rejected the translation \"{s}\""
                ))
            })
        };
        Ok(match self {
            DaysText::One(a) => (Days::One(cron(&a)?), a),
            DaysText::Either(a, b) => (Days::Either(cron(&a)?, cron(&b)?), format!("{a} | {b}")),
            DaysText::Both(a, b) => (Days::Both(cron(&a)?, cron(&b)?), format!("{a} & {b}")),
        })
    }
}

/// True if some selected month has some selected day (February counts 29 days: leap years).
fn dom_fits_months(days: u64, months: u64) -> bool {
    const LENGTHS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    (1..=12u32).any(|m| {
        months & (1 << m) != 0 && (1..=LENGTHS[m as usize - 1]).any(|d| days & (1 << d) != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, SecondsFormat};

    fn utc() -> Tz {
        parse_zone("UTC").unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    /// The next `n` fire instants after `from`, as RFC 3339 in the schedule's zone.
    fn next(expr: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(expr, parse_zone(zone).unwrap()).unwrap();
        s.iter_after(at(from))
            .take(n)
            .map(|t| {
                t.with_timezone(&s.zone())
                    .to_rfc3339_opts(SecondsFormat::Secs, false)
            })
            .collect()
    }

    fn error(expr: &str) -> String {
        Schedule::parse(expr, utc()).unwrap_err().to_string()
    }

    #[test]
    fn translates_crontab_to_saffron() {
        for (cron, saffron) in [
            ("* * * * *", "* * * * *"),
            ("  0 9 * * 1-5\t", "0 9 * * 2-6"),
            ("0 0 * * 0", "0 0 * * 1"),
            ("0 0 * * 7", "0 0 * * 1"),
            ("0 0 * * sun", "0 0 * * 1"),
            ("0 0 * * 5-7", "0 0 * * 1,6-7"),
            ("0 0 * * 0-7", "0 0 * * *"),
            ("0 0 * * MON-FRI", "0 0 * * 2-6"),
            ("0 0 * * */2", "0 0 * * 1,3,5,7"),
            ("*/15 * * * *", "0,15,30,45 * * * *"),
            ("5/20 * * * *", "5,25,45 * * * *"),
            ("0 8-18/2 * * *", "0 8,10,12,14,16,18 * * *"),
            ("0 0 1 JAN-MAR,dec *", "0 0 1 1-3,12 *"),
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
            ("@monthly", "0 0 1 * *"),
            ("@weekly", "0 0 * * 1"),
            ("@daily", "0 0 * * *"),
            (" @midnight ", "0 0 * * *"),
            ("@hourly", "0 * * * *"),
            // both day fields restricted: either matches (two expressions)
            ("30 4 1,15 * 5", "30 4 1,15 * * | 30 4 * * 6"),
            // a day field starting with '*' is unrestricted: both must match
            (
                "0 0 */2 * 1",
                "0 0 1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31 * * & 0 0 * * 2",
            ),
            ("0 0 1-31 * 1", "0 0 * * *"),
            ("0 0 */1 * 1", "0 0 * * 2"),
        ] {
            let s = Schedule::parse(cron, utc()).unwrap_or_else(|e| panic!("{cron}: {e}"));
            assert_eq!(s.saffron(), saffron, "{cron:?}");
        }
    }

    #[test]
    fn errors_name_the_field_and_what_is_allowed() {
        for (expr, msg) in [
            ("61 * * * *", "minute field \"61\": value out of range 0-59"),
            ("0,61 * * * *", "minute field \"0,61\": value 61 out of range 0-59"),
            ("* 24 * * *", "hour field \"24\": value out of range 0-23"),
            ("* * 0 * *", "day-of-month field \"0\": value out of range 1-31"),
            ("* * * 13 *", "month field \"13\": value out of range 1-12 or JAN-DEC"),
            ("* * * * 8", "day-of-week field \"8\": value out of range 0-7 or SUN-SAT"),
            ("* * * FOO *", "month field \"FOO\": \"FOO\" is not a number or name (1-12 or JAN-DEC)"),
            ("x * * * *", "minute field \"x\": \"x\" is not a number 0-59"),
            ("*/0 * * * *", "minute field \"*/0\": step \"0\" must be a number 1-59"),
            ("5-1 * * * *", "minute field \"5-1\": range \"5-1\" runs backwards (crontab ranges do not wrap; use a list)"),
            ("1-,2 * * * *", "minute field \"1-,2\": a range or step is missing a number"),
            ("1,,2 * * * *", "minute field \"1,,2\": empty element in a list"),
            ("99999999999 * * * *", "minute field \"99999999999\": value out of range 0-59"),
            ("* * L * *", "day-of-month field \"L\": \"L\" is not crontab(5) syntax (Quartz's L, W, # and ? are not supported)"),
            ("* * * * 1#2", "day-of-week field \"1#2\": \"1#2\" is not crontab(5) syntax (Quartz's L, W, # and ? are not supported)"),
            ("* * * *", "4 fields instead of 5"),
            ("0 * * * * *", "6 fields instead of 5"),
            ("nonsense", "1 field instead of 5"),
            ("   ", "the expression is empty"),
            ("@fortnightly", "unknown macro \"@fortnightly\" (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"),
            ("@daily 5", "a macro like @daily stands alone, without fields"),
        ] {
            assert_eq!(error(expr), msg, "{expr:?}");
        }
        assert!(error("@reboot").contains("RUN_ON_START"));
    }

    #[test]
    fn refuses_schedules_that_never_fire() {
        for expr in [
            "0 0 31 2 *",
            "0 0 30,31 2 *",
            "0 0 31 4,6,9,11 *",
            "0 0 31 feb */2",
        ] {
            let e = error(expr);
            assert!(e.starts_with("it never fires: "), "{expr}: {e}");
        }
        // These do fire: Feb 29 in leap years; Mondays in February (either-rule); every day.
        assert_eq!(
            next("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", 1),
            ["2028-02-29T00:00:00+00:00"]
        );
        assert_eq!(
            next("0 0 31 2 1", "UTC", "2026-01-01T00:00:00Z", 1),
            ["2026-02-02T00:00:00+00:00"]
        );
        assert_eq!(
            next("0 0 31 2 0-6", "UTC", "2026-01-01T00:00:00Z", 1),
            ["2026-02-01T00:00:00+00:00"]
        );
    }

    #[test]
    fn weekday_mapping() {
        // 2026-01-05 is a Monday.
        let s = Schedule::parse("0 9 * * 1-5", utc()).unwrap();
        let runs: Vec<_> = s.iter_after(at("2026-01-03T00:00:00Z")).take(20).collect();
        assert!(runs.iter().all(|t| t.weekday().number_from_monday() <= 5));
        assert_eq!(runs[0], at("2026-01-05T09:00:00Z"));
        assert_eq!(runs[5], at("2026-01-12T09:00:00Z"));
        for expr in ["0 0 * * 0", "0 0 * * 7", "0 0 * * SUN", "@weekly"] {
            assert_eq!(
                next(expr, "UTC", "2026-01-01T00:00:00Z", 2),
                ["2026-01-04T00:00:00+00:00", "2026-01-11T00:00:00+00:00"],
                "{expr}"
            );
        }
    }

    /// crontab(5) matching, minute by minute: the reference the saffron translation must agree with.
    fn brute_matches(f: &Fields, t: DateTime<Utc>) -> bool {
        let bit = |set: u64, v: u32| set & (1 << v) != 0;
        let dom = bit(f.days_of_month, t.day());
        let dow = bit(f.days_of_week, t.weekday().num_days_from_sunday());
        let day = if f.dom_star || f.dow_star {
            dom && dow
        } else {
            dom || dow
        };
        bit(f.minutes, t.minute()) && bit(f.hours, t.hour()) && bit(f.months, t.month()) && day
    }

    #[test]
    fn agrees_with_a_brute_force_reference() {
        let from = at("2025-12-30T22:17:00Z");
        let until = at("2026-04-02T00:00:00Z");
        for expr in [
            "* * * * *",
            "*/7 */5 * * *",
            "0 0 */2 * 1",
            "15 10 1-10/3 * */3",
            "30 4 1,15 * 5",
            "0 12 13 * FRI",
            "0 0 1-7 * 1",
            "0 0 */10 FEB,MAR sat,sun",
            "59 23 31 * *",
            "0 0 28-31 * *",
            "0 6 * 1-3 1-5",
            "0 0 */3 * 0-6",
            "*/20 1 * * 7",
        ] {
            let f = parse_fields(expr).unwrap();
            let s = Schedule::parse(expr, utc()).unwrap();
            let mut expected = Vec::new();
            let mut t = from + Duration::minutes(1);
            while t < until {
                if brute_matches(&f, t) {
                    expected.push(t);
                }
                t += Duration::minutes(1);
            }
            let got: Vec<_> = s.iter_after(from).take_while(|t| *t < until).collect();
            assert_eq!(got.len(), expected.len(), "{expr}");
            assert!(
                got == expected,
                "{expr}: first difference at {:?}",
                got.iter().zip(&expected).find(|(a, b)| a != b)
            );
        }
    }

    #[test]
    fn next_is_strictly_after_from() {
        let s = Schedule::parse("* * * * *", utc()).unwrap();
        assert_eq!(
            s.next_after(at("2026-05-01T12:00:00Z")),
            Some(at("2026-05-01T12:01:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-05-01T11:59:59.999Z")),
            Some(at("2026-05-01T12:00:00Z"))
        );
        let s = Schedule::parse("@yearly", utc()).unwrap();
        assert_eq!(
            s.next_after(at("2026-05-01T12:00:00Z")),
            Some(at("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn new_york_spring_forward_2026_03_08() {
        // 02:00 EST jumps to 03:00 EDT; 02:xx does not exist.
        let from = "2026-03-07T12:00:00-05:00";
        // A fixed-time job inside the gap runs once, right after it.
        assert_eq!(
            next("30 2 * * *", "America/New_York", from, 2),
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
        );
        assert_eq!(
            next("15,45 2 * * *", "America/New_York", from, 3),
            [
                "2026-03-08T03:00:00-04:00",
                "2026-03-09T02:15:00-04:00",
                "2026-03-09T02:45:00-04:00"
            ]
        );
        // ... and does not run twice when 03:00 is a slot of its own.
        assert_eq!(
            next("0 2,3 * * *", "America/New_York", from, 3),
            [
                "2026-03-08T03:00:00-04:00",
                "2026-03-09T02:00:00-04:00",
                "2026-03-09T03:00:00-04:00"
            ]
        );
        // A wildcard job follows the real clock: nothing to run inside the gap.
        assert_eq!(
            next(
                "*/30 * * * *",
                "America/New_York",
                "2026-03-08T00:50:00-05:00",
                4
            ),
            [
                "2026-03-08T01:00:00-05:00",
                "2026-03-08T01:30:00-05:00",
                "2026-03-08T03:00:00-04:00",
                "2026-03-08T03:30:00-04:00"
            ]
        );
        assert_eq!(
            next("*/15 2 * * *", "America/New_York", from, 1),
            ["2026-03-09T02:00:00-04:00"]
        );
    }

    #[test]
    fn new_york_fall_back_2026_11_01() {
        // 02:00 EDT falls back to 01:00 EST; 01:xx happens twice.
        let from = "2026-10-31T12:00:00-04:00";
        // A fixed-time job in the repeated hour runs once (the first time).
        assert_eq!(
            next("30 1 * * *", "America/New_York", from, 2),
            ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
        );
        // Wildcard jobs run in both passes.
        assert_eq!(
            next(
                "*/30 * * * *",
                "America/New_York",
                "2026-11-01T00:20:00-04:00",
                6
            ),
            [
                "2026-11-01T00:30:00-04:00",
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T01:30:00-04:00",
                "2026-11-01T01:00:00-05:00",
                "2026-11-01T01:30:00-05:00",
                "2026-11-01T02:00:00-05:00"
            ]
        );
        assert_eq!(
            next(
                "@hourly",
                "America/New_York",
                "2026-11-01T00:20:00-04:00",
                4
            ),
            [
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T01:00:00-05:00",
                "2026-11-01T02:00:00-05:00",
                "2026-11-01T03:00:00-05:00"
            ]
        );
        // Starting inside the first pass, the second pass is still found.
        assert_eq!(
            next(
                "@hourly",
                "America/New_York",
                "2026-11-01T01:40:00-04:00",
                1
            ),
            ["2026-11-01T01:00:00-05:00"]
        );
        // Starting inside the second pass, the fixed-time job does not repeat.
        assert_eq!(
            next(
                "30 1 * * *",
                "America/New_York",
                "2026-11-01T01:10:00-05:00",
                1
            ),
            ["2026-11-02T01:30:00-05:00"]
        );
    }

    #[test]
    fn berlin_2026() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST.
        assert_eq!(
            next(
                "30 2 * * *",
                "Europe/Berlin",
                "2026-03-28T12:00:00+01:00",
                2
            ),
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
        );
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET.
        assert_eq!(
            next(
                "30 2 * * *",
                "Europe/Berlin",
                "2026-10-24T12:00:00+02:00",
                2
            ),
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
        );
        assert_eq!(
            next(
                "30 2 * * *",
                "Europe/Berlin",
                "2026-10-25T02:40:00+02:00",
                1
            ),
            ["2026-10-26T02:30:00+01:00"]
        );
        assert_eq!(
            next(
                "30 * * * *",
                "Europe/Berlin",
                "2026-10-25T01:40:00+02:00",
                3
            ),
            [
                "2026-10-25T02:30:00+02:00",
                "2026-10-25T02:30:00+01:00",
                "2026-10-25T03:30:00+01:00"
            ]
        );
        // Midnight jobs are unaffected; the zone shifts them against UTC.
        assert_eq!(
            next("@daily", "Europe/Berlin", "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00"]
        );
    }

    #[test]
    fn zones() {
        assert!(parse_zone("Europe/Berlin").is_ok());
        assert!(parse_zone(" America/New_York ").is_ok());
        assert!(parse_zone(":UTC").is_ok());
        for bad in ["Mars/Olympus", "", "CET+1", "Europe/"] {
            assert!(parse_zone(bad).unwrap_err().contains("IANA"), "{bad}");
        }
    }
}
