//! Billing terms and rating: what a call costs, in whole coins.
//!
//! Everything here is pure integer arithmetic (i128 inside, so no rate or
//! duration can overflow it). docs/metering.md states the same rules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::MeterError;

/// Largest accepted rate, coins per minute.
pub const MAX_RATE_PER_MINUTE: i64 = 1_000_000_000;
/// Largest accepted increment, seconds.
pub const MAX_INCREMENT: u32 = 3600;
/// 100 % in basis points.
pub const FULL_BPS: u32 = 10_000;

/// What one billed session costs: rate, telecom increments, commission.
///
/// `initial_increment`/`increment` are seconds: 60/60 bills per started
/// minute, 60/1 a first minute then per second, 1/1 per second.
/// `commission_bps` is the platform's share of every charge in basis
/// points (2000 = 20 %); the payee gets the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TermsRepr")]
pub struct BillingTerms {
    pub rate_per_minute: i64,
    pub initial_increment: u32,
    pub increment: u32,
    pub commission_bps: u32,
}

impl Default for BillingTerms {
    /// 60/60 increments, no commission, and no rate yet (0 is refused by
    /// [`BillingTerms::validate`]: set `rate_per_minute`).
    fn default() -> Self {
        BillingTerms {
            rate_per_minute: 0,
            initial_increment: 60,
            increment: 60,
            commission_bps: 0,
        }
    }
}

/// The forms a config file or a token may use: either the plain fields or
/// the short ones (`rate`, `increments = "60/1"`, `commission = "20%"`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TermsRepr {
    #[serde(alias = "rate")]
    rate_per_minute: i64,
    initial_increment: Option<u32>,
    increment: Option<u32>,
    increments: Option<String>,
    commission_bps: Option<u32>,
    commission: Option<String>,
}

impl TryFrom<TermsRepr> for BillingTerms {
    type Error = MeterError;

    fn try_from(r: TermsRepr) -> Result<Self, MeterError> {
        let mut terms = BillingTerms::new(r.rate_per_minute);
        if let Some(text) = &r.increments {
            terms.set_increments(text)?;
        }
        if let Some(i) = r.initial_increment {
            terms.initial_increment = i;
        }
        if let Some(i) = r.increment {
            terms.increment = i;
        }
        if let Some(text) = &r.commission {
            terms.set_commission(text)?;
        }
        if let Some(bps) = r.commission_bps {
            terms.commission_bps = bps;
        }
        terms.validate()?;
        Ok(terms)
    }
}

fn invalid(message: impl Into<String>) -> MeterError {
    MeterError::InvalidTerms(message.into())
}

/// `"60/60"`, `"60/1"`, `"1/1"` → (initial, increment) seconds.
pub fn parse_increments(text: &str) -> Result<(u32, u32), MeterError> {
    let bad = || invalid(format!("increments `{text}` are not like 60/60 (seconds)"));
    let (a, b) = text.trim().split_once('/').ok_or_else(bad)?;
    let a: u32 = a.trim().parse().map_err(|_| bad())?;
    let b: u32 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || b == 0 || a > MAX_INCREMENT || b > MAX_INCREMENT {
        return Err(invalid(format!(
            "increments `{text}` must be 1..={MAX_INCREMENT} seconds each"
        )));
    }
    Ok((a, b))
}

/// `"20%"`, `"12.5%"`, `"12.55%"`, `"2000bps"` → basis points.
pub fn parse_commission(text: &str) -> Result<u32, MeterError> {
    let t = text.trim();
    let bad = || {
        invalid(format!(
            "commission `{text}` is not like 20% (up to two decimals) or 2000bps, 0..=100%"
        ))
    };
    let bps = if let Some(n) = t.strip_suffix("bps") {
        n.trim().parse::<u32>().map_err(|_| bad())?
    } else if let Some(n) = t.strip_suffix('%') {
        let n = n.trim();
        let (whole, frac) = n.split_once('.').unwrap_or((n, ""));
        if whole.is_empty() || frac.len() > 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let whole: u32 = whole.parse().map_err(|_| bad())?;
        let frac: u32 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<2}").parse().map_err(|_| bad())?
        };
        whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(frac))
            .ok_or_else(bad)?
    } else {
        return Err(bad());
    };
    if bps > FULL_BPS {
        return Err(bad());
    }
    Ok(bps)
}

fn ceil_div(a: i128, b: i128) -> i128 {
    debug_assert!(a >= 0 && b > 0);
    (a + b - 1) / b
}

impl BillingTerms {
    /// `rate_per_minute` coins a minute, 60/60, no commission.
    pub fn new(rate_per_minute: i64) -> Self {
        BillingTerms {
            rate_per_minute,
            ..BillingTerms::default()
        }
    }

    pub fn with_increments(mut self, initial: u32, increment: u32) -> Self {
        self.initial_increment = initial;
        self.increment = increment;
        self
    }

    pub fn with_commission_bps(mut self, bps: u32) -> Self {
        self.commission_bps = bps;
        self
    }

    /// Sets the increments from `"60/60"`-style text.
    pub fn set_increments(&mut self, text: &str) -> Result<(), MeterError> {
        let (a, b) = parse_increments(text)?;
        self.initial_increment = a;
        self.increment = b;
        Ok(())
    }

    /// Sets the commission from `"20%"` or `"2000bps"`.
    pub fn set_commission(&mut self, text: &str) -> Result<(), MeterError> {
        self.commission_bps = parse_commission(text)?;
        Ok(())
    }

    /// Refuses terms no session can be rated with.
    pub fn validate(&self) -> Result<(), MeterError> {
        if self.rate_per_minute <= 0 || self.rate_per_minute > MAX_RATE_PER_MINUTE {
            return Err(invalid(format!(
                "rate_per_minute must be 1..={MAX_RATE_PER_MINUTE} coins, not {}",
                self.rate_per_minute
            )));
        }
        for (name, v) in [
            ("initial_increment", self.initial_increment),
            ("increment", self.increment),
        ] {
            if v == 0 || v > MAX_INCREMENT {
                return Err(invalid(format!(
                    "{name} must be 1..={MAX_INCREMENT} seconds, not {v}"
                )));
            }
        }
        if self.commission_bps > FULL_BPS {
            return Err(invalid(format!(
                "commission_bps must be 0..={FULL_BPS}, not {}",
                self.commission_bps
            )));
        }
        Ok(())
    }

    /// Seconds billed for `seconds` of call: 0 for 0, else the initial
    /// increment, then whole increments, each started one counted in full.
    pub fn billed_seconds(&self, seconds: u64) -> u64 {
        let (first, next) = (u64::from(self.initial_increment), u64::from(self.increment));
        if seconds == 0 {
            0
        } else if seconds <= first {
            first
        } else {
            // Saturates: a duration within one increment of u64::MAX seconds
            // bills u64::MAX seconds rather than wrap.
            (seconds - first)
                .div_ceil(next)
                .saturating_mul(next)
                .saturating_add(first)
        }
    }

    /// Coins for `billed_seconds`: ceil(rate × seconds / 60).
    pub fn cost(&self, billed_seconds: u64) -> i64 {
        let c = ceil_div(
            i128::from(self.rate_per_minute) * i128::from(billed_seconds),
            60,
        );
        i64::try_from(c).unwrap_or(i64::MAX)
    }

    /// The whole rating of a call that lasted `elapsed_ms` with enough
    /// money: (billed seconds, coins). The elapsed time is first rounded up
    /// to the whole second.
    pub fn charge(&self, elapsed_ms: u64) -> (u64, i64) {
        let b = self.billed_seconds(elapsed_ms.div_ceil(1000));
        (b, self.cost(b))
    }

    /// The platform's and the payee's parts of `coins` charged in total:
    /// the platform gets floor(coins × bps / 10000), the payee the rest;
    /// with no payee the platform gets everything. Splitting the running
    /// total (not each capture) keeps a session's parts independent of
    /// how many captures it took.
    pub fn split(&self, coins: i64, has_payee: bool) -> Split {
        if !has_payee {
            return Split {
                payee: 0,
                platform: coins,
            };
        }
        let platform =
            (i128::from(coins) * i128::from(self.commission_bps) / i128::from(FULL_BPS)) as i64;
        Split {
            payee: coins - platform,
            platform,
        }
    }

    /// `"60/60"`.
    pub fn increments_text(&self) -> String {
        format!("{}/{}", self.initial_increment, self.increment)
    }

    // ---- the session model (crate-internal; docs/metering.md "Rating") ----

    /// The end of the hold block that starts at `start_s` (seconds of call):
    /// `block_s` seconds further, rounded up to the increments. The first
    /// block starts at 0. Always later than `start_s`.
    pub(crate) fn next_boundary(&self, start_s: u64, block_s: u64) -> u64 {
        self.billed_seconds(start_s.saturating_add(block_s.max(1)))
    }

    /// Rating of a session that ran `elapsed_ms` under an optional limit.
    /// With no limit: increments. With a limit (the payer's funds when the
    /// current block could not be held in full): per started second,
    /// capped at the limit — "the last stretch is pro-rata by the second".
    pub(crate) fn rate_at(&self, elapsed_ms: i64, limit: Option<i64>) -> (i64, i64) {
        let ms = elapsed_ms.max(0) as u64;
        match limit {
            None => {
                let (b, c) = self.charge(ms);
                (b as i64, c)
            }
            Some(limit) => {
                let s = ms.div_ceil(1000);
                (s as i64, self.cost(s).min(limit))
            }
        }
    }

    /// The instant (ms of call) at which the pro-rata cost reaches `coins`:
    /// ceil(coins × 60000 / rate).
    pub(crate) fn ms_funded_by(&self, coins: i64) -> i64 {
        let ms = ceil_div(
            i128::from(coins.max(0)) * 60_000,
            i128::from(self.rate_per_minute),
        );
        i64::try_from(ms).unwrap_or(i64::MAX)
    }
}

/// A charge split between the payee's earnings and the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub payee: i64,
    pub platform: i64,
}

impl fmt::Display for BillingTerms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} coins/min {}/{} commission {}.{:02}%",
            self.rate_per_minute,
            self.initial_increment,
            self.increment,
            self.commission_bps / 100,
            self.commission_bps % 100
        )
    }
}

/// Audio-only or video call (the call type in the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CallType {
    #[default]
    Audio,
    Video,
}

impl CallType {
    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Audio => "audio",
            CallType::Video => "video",
        }
    }
}

impl fmt::Display for CallType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CallType {
    type Err = MeterError;
    fn from_str(s: &str) -> Result<Self, MeterError> {
        match s {
            "audio" => Ok(CallType::Audio),
            "video" => Ok(CallType::Video),
            other => Err(MeterError::Malformed(format!(
                "call type `{other}` is not audio or video"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_round_up() {
        let t = BillingTerms::new(10);
        assert_eq!(t.billed_seconds(0), 0);
        assert_eq!(t.billed_seconds(1), 60);
        assert_eq!(t.billed_seconds(60), 60);
        assert_eq!(t.billed_seconds(61), 120);
        let t = t.with_increments(60, 1);
        assert_eq!(t.billed_seconds(5), 60);
        assert_eq!(t.billed_seconds(61), 61);
        let t = t.with_increments(1, 1);
        assert_eq!(t.billed_seconds(61), 61);
        let t = t.with_increments(30, 6);
        assert_eq!(t.billed_seconds(31), 36);
        assert_eq!(t.billed_seconds(36), 36);
        assert_eq!(t.billed_seconds(37), 42);
    }

    #[test]
    fn cost_is_ceil_of_rate_times_seconds() {
        let t = BillingTerms::new(7).with_increments(1, 1);
        assert_eq!(t.cost(0), 0);
        assert_eq!(t.cost(1), 1); // 7/60 → 1
        assert_eq!(t.cost(60), 7);
        assert_eq!(t.cost(61), 8); // 7.11 → 8
        assert_eq!(t.charge(60_001), (61, 8));
        assert_eq!(t.charge(0), (0, 0));
        let t = BillingTerms::new(10);
        assert_eq!(t.charge(1), (60, 10));
        assert_eq!(t.charge(60_000), (60, 10));
        assert_eq!(t.charge(60_001), (120, 20));
        // No overflow at the extremes.
        let t = BillingTerms::new(MAX_RATE_PER_MINUTE);
        assert_eq!(t.cost(u32::MAX as u64), 71_582_788_250_000_000);
    }

    #[test]
    fn rating_saturates_at_the_end_of_u64() {
        let t = BillingTerms::new(10);
        // These two panicked with an overflow in a debug build.
        assert_eq!(t.billed_seconds(u64::MAX), u64::MAX);
        assert_eq!(t.next_boundary(u64::MAX - 1, 60), u64::MAX);
        // Still exact where the rounded-up result fits.
        assert_eq!(t.billed_seconds(u64::MAX - 59), 18_446_744_073_709_551_600);
        assert_eq!(
            t.charge(u64::MAX),
            (18_446_744_073_709_560, 3_074_457_345_618_260)
        );
        // At the largest rate the coins saturate at i64::MAX.
        let t = BillingTerms::new(MAX_RATE_PER_MINUTE);
        assert_eq!(t.cost(u64::MAX), i64::MAX);
        assert_eq!(t.charge(u64::MAX), (18_446_744_073_709_560, i64::MAX));
    }

    #[test]
    fn pro_rata_stretch_is_per_second_capped_at_the_limit() {
        let t = BillingTerms::new(60); // 60/60
        assert_eq!(t.rate_at(3_000, Some(5)), (3, 3));
        assert_eq!(t.rate_at(5_000, Some(5)), (5, 5));
        assert_eq!(t.rate_at(3_000, None), (60, 60));
        assert_eq!(t.ms_funded_by(5), 5_000);
        let t = BillingTerms::new(120);
        // 5 coins fund 2.5 s; the third second costs 2 but only 1 is left.
        assert_eq!(t.ms_funded_by(5), 2_500);
        assert_eq!(t.rate_at(2_500, Some(5)), (3, 5));
        let t = BillingTerms::new(7);
        assert_eq!(t.ms_funded_by(5), 42_858);
        assert_eq!(t.rate_at(42_858, Some(5)), (43, 5));
    }

    #[test]
    fn blocks_follow_the_increments() {
        let t = BillingTerms::new(10);
        assert_eq!(t.next_boundary(0, 60), 60);
        assert_eq!(t.next_boundary(60, 60), 120);
        let t = t.with_increments(300, 300);
        assert_eq!(t.next_boundary(0, 60), 300);
        assert_eq!(t.next_boundary(300, 60), 600);
        let t = t.with_increments(30, 45);
        assert_eq!(t.next_boundary(0, 60), 75);
        assert_eq!(t.next_boundary(75, 60), 165);
    }

    #[test]
    fn split_is_exact() {
        let t = BillingTerms::new(10).with_commission_bps(2000);
        assert_eq!(
            t.split(10, true),
            Split {
                payee: 8,
                platform: 2
            }
        );
        assert_eq!(
            t.split(7, true),
            Split {
                payee: 6,
                platform: 1
            }
        );
        assert_eq!(
            t.split(7, false),
            Split {
                payee: 0,
                platform: 7
            }
        );
        for bps in [0, 1, 333, 2000, 9999, 10_000] {
            let t = t.with_commission_bps(bps);
            let mut last = t.split(0, true);
            for coins in 0..2000 {
                let s = t.split(coins, true);
                assert_eq!(s.payee + s.platform, coins);
                assert!(s.payee >= last.payee && s.platform >= last.platform);
                last = s;
            }
        }
    }

    #[test]
    fn parsing() {
        assert_eq!(parse_increments("60/60").unwrap(), (60, 60));
        assert_eq!(parse_increments(" 1 / 1 ").unwrap(), (1, 1));
        for bad in ["60", "0/1", "1/0", "a/b", "4000/1", "-1/1", ""] {
            let e = parse_increments(bad).unwrap_err();
            assert_eq!(e.code(), "invalid_terms", "{bad}");
        }
        assert_eq!(parse_commission("20%").unwrap(), 2000);
        assert_eq!(parse_commission("12.5%").unwrap(), 1250);
        assert_eq!(parse_commission("12.55%").unwrap(), 1255);
        assert_eq!(parse_commission("0%").unwrap(), 0);
        assert_eq!(parse_commission("100%").unwrap(), 10_000);
        assert_eq!(parse_commission("250bps").unwrap(), 250);
        for bad in [
            "20", "101%", "12.555%", ".5%", "-1%", "x%", "10001bps", "1e2%",
        ] {
            assert!(parse_commission(bad).is_err(), "{bad}");
        }
        let t: BillingTerms =
            serde_json::from_str(r#"{"rate":10,"increments":"60/1","commission":"20%"}"#).unwrap();
        assert_eq!(
            t,
            BillingTerms::new(10)
                .with_increments(60, 1)
                .with_commission_bps(2000)
        );
        let back: BillingTerms = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        assert!(serde_json::from_str::<BillingTerms>(r#"{"rate":0}"#).is_err());
        assert!(serde_json::from_str::<BillingTerms>(r#"{"rate":1,"x":1}"#).is_err());
        let mut t = BillingTerms::default();
        assert!(t.validate().is_err());
        t.rate_per_minute = 5;
        t.validate().unwrap();
        assert_eq!(t.to_string(), "5 coins/min 60/60 commission 0.00%");
    }
}
