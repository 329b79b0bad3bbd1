//! STUB
use chrono::NaiveDate;
pub struct Window { pub date: NaiveDate }
impl Window {
    pub fn for_date(date: NaiveDate) -> Self { Window { date } }
    pub fn from_date(&self) -> String { format!("{}T00:00:00.000Z", self.date) }
    pub fn to_date(&self) -> String { format!("{}T23:59:59.999Z", self.date) }
}
pub fn x_request_id(_b: &str, _t: &str, _i: &str, _d: NaiveDate, _f: &str, _c: &[String], _g: u32) -> uuid::Uuid { todo!() }
