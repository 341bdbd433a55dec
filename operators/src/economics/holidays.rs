//! Norwegian public holidays (helligdager), for tariff rules that treat them like Sundays.
//!
//! Fixed: 1 January, 1 May, 17 May, 25 and 26 December. Movable, from Easter Sunday (the
//! Gregorian computus): Maundy Thursday (-3), Good Friday (-2), Easter Sunday, Easter Monday
//! (+1), Ascension Day (+39), Whit Sunday (+49), Whit Monday (+50). Christmas Eve and New
//! Year's Eve are not public holidays.

use chrono::{Datelike, NaiveDate};

/// Easter Sunday of `year` (anonymous Gregorian algorithm); `None` outside chrono's range.
#[must_use]
pub fn easter_sunday(year: i32) -> Option<NaiveDate> {
    let a = year.rem_euclid(19);
    let b = year.div_euclid(100);
    let c = year.rem_euclid(100);
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?)
}

/// Whether `date` is a Norwegian public holiday.
#[must_use]
pub fn is_holiday(date: NaiveDate) -> bool {
    let fixed = matches!(
        (date.month(), date.day()),
        (1, 1) | (5, 1) | (5, 17) | (12, 25) | (12, 26)
    );
    if fixed {
        return true;
    }
    let Some(easter) = easter_sunday(date.year()) else {
        return false;
    };
    let offset = (date - easter).num_days();
    matches!(offset, -3 | -2 | 0 | 1 | 39 | 49 | 50)
}
