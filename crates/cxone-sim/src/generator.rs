//! Deterministic, random-access CDR rows: row `i` of a day depends only on the seed, the
//! date, `i` and the day's row count, so any part can be produced without the others and
//! the same bytes come back on every download.
//!
//! Values exercise CSV the hard way: names with commas and double quotes, dispositions
//! with embedded LF and CRLF, non-ASCII names, empty fields.

use chrono::{Datelike, NaiveDate};

/// A column the simulated `callDetailRecords` report knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Column {
    CallId,
    StartTime,
    EndTime,
    Duration,
    AgentName,
    QueueName,
    Disposition,
    CallDirection,
    CustomerNumber,
    AgentNumber,
    SkillName,
    ContactId,
    HoldTime,
    Transferred,
    CallDate,
}

impl Column {
    /// Every known column, in the report's default order.
    pub const ALL: [Column; 15] = [
        Column::CallId,
        Column::StartTime,
        Column::EndTime,
        Column::Duration,
        Column::AgentName,
        Column::QueueName,
        Column::Disposition,
        Column::CallDirection,
        Column::CustomerNumber,
        Column::AgentNumber,
        Column::SkillName,
        Column::ContactId,
        Column::HoldTime,
        Column::Transferred,
        Column::CallDate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Column::CallId => "CallId",
            Column::StartTime => "StartTime",
            Column::EndTime => "EndTime",
            Column::Duration => "Duration",
            Column::AgentName => "AgentName",
            Column::QueueName => "QueueName",
            Column::Disposition => "Disposition",
            Column::CallDirection => "CallDirection",
            Column::CustomerNumber => "CustomerNumber",
            Column::AgentNumber => "AgentNumber",
            Column::SkillName => "SkillName",
            Column::ContactId => "ContactId",
            Column::HoldTime => "HoldTime",
            Column::Transferred => "Transferred",
            Column::CallDate => "CallDate",
        }
    }

    pub fn from_name(name: &str) -> Option<Column> {
        Column::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// The names of every column the simulator knows (what a create may request).
pub fn known_columns() -> Vec<&'static str> {
    Column::ALL.iter().map(|c| c.name()).collect()
}

const AGENTS: [&str; 12] = [
    "Alice Johnson",
    "Bob Smith",
    "José García",
    "Zoë Ångström",
    "北京 王伟",
    "O'Brien, Seán",
    "Dana \"DJ\" Jones",
    "Mikko Häkkinen",
    "Priya Patel",
    "Chen, Li",
    "Ana-María Núñez",
    "Tomasz Wójcik",
];

const QUEUES: [&str; 6] = [
    "Sales",
    "Support, Tier 1",
    "Support, Tier 2",
    "Billing",
    "Retención",
    "VIP \"Gold\"",
];

const SKILLS: [&str; 5] = [
    "Inbound Sales",
    "Tech Support",
    "Billing EN",
    "Billing ES",
    "Outbound Campaign",
];

const DISPOSITIONS: [&str; 9] = [
    "Resolved",
    "Callback requested",
    "Transferred to billing",
    "Escalated\nCustomer will call back tomorrow",
    "Voicemail left",
    "Note: customer said \"cancel, now\"\r\nFollow-up ticket #4411",
    "Sale",
    "No answer",
    "",
];

const ABANDONED: &str = "Abandoned";
const DAY_MS: u64 = 86_400_000;

/// One generated call, before it is rendered into any column.
#[derive(Clone, Debug)]
pub struct CallRecord {
    pub call_id: u64,
    pub contact_id: u64,
    /// Seconds since midnight UTC of the day.
    pub start_sec: u32,
    pub duration_sec: u32,
    /// The sub-second part for the decimal-milliseconds drift: `0..=9999` tenths of a ms.
    pub duration_extra_tenth_ms: u32,
    pub hold_sec: u32,
    pub agent: Option<&'static str>,
    pub agent_number: Option<u32>,
    pub queue: &'static str,
    pub skill: &'static str,
    pub disposition: &'static str,
    pub inbound: bool,
    pub customer_number: u64,
    pub transferred: bool,
}

/// The rows of one day.
#[derive(Clone, Debug)]
pub struct DayGenerator {
    seed: u64,
    date: NaiveDate,
    rows: u64,
    day_number: u64,
}

/// SplitMix64 finaliser: turns correlated inputs into independent seeds.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl DayGenerator {
    pub fn new(seed: u64, date: NaiveDate, rows: u64) -> Self {
        let day_number = u64::try_from(date.num_days_from_ce()).unwrap_or(0);
        DayGenerator {
            seed,
            date,
            rows,
            day_number,
        }
    }

    pub fn date(&self) -> NaiveDate {
        self.date
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Start of row `i` in seconds since midnight. Rows are spread over the day in slots,
    /// so start times never decrease with `i` (which makes window filtering a range).
    pub fn start_sec(&self, i: u64) -> u32 {
        self.slot_start_ms(i, &mut self.rng(i)) as u32 / 1000
    }

    fn rng(&self, i: u64) -> fastrand::Rng {
        fastrand::Rng::with_seed(mix(self.seed
            ^ mix(self.day_number)
            ^ mix(i.wrapping_add(1))))
    }

    fn slot_start_ms(&self, i: u64, rng: &mut fastrand::Rng) -> u64 {
        let n = self.rows.max(1);
        let lo = (i as u128 * DAY_MS as u128 / n as u128) as u64;
        let hi = ((i as u128 + 1) * DAY_MS as u128 / n as u128) as u64;
        if hi > lo { rng.u64(lo..hi) } else { lo }
    }

    /// Row `i` of the day (`i < rows`).
    pub fn record(&self, i: u64) -> CallRecord {
        let mut rng = self.rng(i);
        let start_sec = (self.slot_start_ms(i, &mut rng) / 1000) as u32;
        let abandoned = rng.u8(0..20) == 0;
        // Call lengths are long-tailed: mostly a few minutes, sometimes an hour.
        let duration = match rng.u8(0..10) {
            0 => rng.u32(0..30),
            1..=7 => rng.u32(30..900),
            _ => rng.u32(900..3600),
        };
        let duration_sec = duration.min(86_399 - start_sec);
        let inbound = rng.u8(0..3) != 0;
        let agent = (!abandoned).then(|| AGENTS[rng.usize(0..AGENTS.len())]);
        let agent_number = if abandoned || rng.u8(0..25) == 0 {
            None
        } else {
            Some(rng.u32(1000..10_000))
        };
        CallRecord {
            call_id: 1_000_000_000_000_000 + self.day_number * 100_000_000 + i,
            contact_id: 500_000_000_000 + mix(self.day_number ^ (i << 24)) % 100_000_000_000,
            start_sec,
            duration_sec,
            duration_extra_tenth_ms: rng.u32(0..10_000),
            hold_sec: if abandoned {
                0
            } else {
                rng.u32(0..duration_sec / 4 + 1)
            },
            agent,
            agent_number,
            queue: QUEUES[rng.usize(0..QUEUES.len())],
            skill: SKILLS[rng.usize(0..SKILLS.len())],
            disposition: if abandoned {
                ABANDONED
            } else {
                DISPOSITIONS[rng.usize(0..DISPOSITIONS.len())]
            },
            inbound,
            customer_number: 12_025_550_000 + rng.u64(0..10_000) + 1_000_000 * rng.u64(0..800),
            transferred: rng.u8(0..8) == 0,
        }
    }

    /// Text of an extra column the report does not know: deterministic per name and row.
    pub fn extra_value(&self, name: &str, i: u64) -> String {
        let mut h = self.seed ^ mix(self.day_number) ^ mix(i);
        for b in name.bytes() {
            h = mix(h ^ u64::from(b));
        }
        match h % 4 {
            0 => String::new(),
            1 => format!("{}", h % 1000),
            2 => format!("seg-{:x}", h >> 40),
            _ => format!("tag {}, v{}", h % 7, h % 3),
        }
    }
}

/// A rendered value: text for CSV, typed for JSON.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Text(String),
    Str(&'static str),
    Int(u64),
    /// A decimal number, already formatted.
    Decimal(String),
    Bool(bool),
}

impl Value {
    /// The value as CSV text and as `expected_rows` reports it.
    pub fn to_text(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            Value::Str(s) => (*s).to_owned(),
            Value::Int(n) => n.to_string(),
            Value::Decimal(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
        }
    }
}

fn timestamp(date: NaiveDate, sec: u32) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        date.year(),
        date.month(),
        date.day(),
        sec / 3600,
        sec / 60 % 60,
        sec % 60
    )
}

impl CallRecord {
    /// The value of `column` for this call.
    pub fn value(&self, column: Column, date: NaiveDate, duration_decimal_ms: bool) -> Value {
        match column {
            Column::CallId => Value::Text(self.call_id.to_string()),
            Column::ContactId => Value::Text(self.contact_id.to_string()),
            Column::StartTime => Value::Text(timestamp(date, self.start_sec)),
            Column::EndTime => Value::Text(timestamp(date, self.start_sec + self.duration_sec)),
            Column::Duration if duration_decimal_ms => {
                let tenths =
                    u64::from(self.duration_sec) * 10_000 + u64::from(self.duration_extra_tenth_ms);
                Value::Decimal(format!("{}.{}", tenths / 10, tenths % 10))
            }
            Column::Duration => Value::Int(u64::from(self.duration_sec)),
            Column::HoldTime => Value::Int(u64::from(self.hold_sec)),
            Column::AgentName => Value::Str(self.agent.unwrap_or("")),
            Column::AgentNumber => match self.agent_number {
                Some(n) => Value::Text(format!("+1202555{n}")),
                None => Value::Str(""),
            },
            Column::QueueName => Value::Str(self.queue),
            Column::SkillName => Value::Str(self.skill),
            Column::Disposition => Value::Str(self.disposition),
            Column::CallDirection => Value::Str(if self.inbound { "Inbound" } else { "Outbound" }),
            Column::CustomerNumber => Value::Text(format!("+{}", self.customer_number)),
            Column::Transferred => Value::Bool(self.transferred),
            Column::CallDate => Value::Text(date.format("%Y-%m-%d").to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_deterministic_ordered_and_inside_the_day() {
        let date = NaiveDate::from_ymd_opt(2024, 5, 15).unwrap();
        let g = DayGenerator::new(1, date, 5000);
        let mut last = 0;
        let mut ids = std::collections::HashSet::new();
        for i in 0..5000 {
            let r = g.record(i);
            assert!(r.start_sec >= last);
            assert!(r.start_sec + r.duration_sec < 86_400);
            assert_eq!(r.start_sec, g.start_sec(i));
            last = r.start_sec;
            assert!(ids.insert(r.call_id));
        }
        assert_eq!(format!("{:?}", g.record(17)), format!("{:?}", g.record(17)));
        let other = DayGenerator::new(2, date, 5000);
        assert_ne!(
            format!("{:?}", g.record(17)),
            format!("{:?}", other.record(17))
        );
        let r = g.record(3);
        assert!(
            r.value(Column::Duration, date, true)
                .to_text()
                .contains('.')
        );
        assert!(
            r.value(Column::StartTime, date, false)
                .to_text()
                .starts_with("2024-05-15T")
        );
    }
}
