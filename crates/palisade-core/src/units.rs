//! Human-friendly units in the config file: durations (`250ms`, `10s`, `5m`) and sizes (`16KiB`, `10MiB`).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written as `250ms`, `10s`, `1m30s` (humantime syntax).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }
    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map(Duration)
            .map_err(|e| de::Error::custom(format!("invalid duration {text:?} ({e}); expected e.g. 250ms, 10s, 5m")))
    }
}

/// A size in bytes: a plain integer, or a number with `B`, `KiB`, `MiB`, `GiB` (also `KB`, `MB`, `GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn get(self) -> u64 {
        self.0
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(digits_end);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("invalid size {text:?}; expected e.g. 16KiB, 10MiB"))?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "KB" | "k" => 1024,
            "MiB" | "MB" | "m" => 1024 * 1024,
            "GiB" | "GB" | "g" => 1024 * 1024 * 1024,
            other => return Err(format!("unknown size unit {other:?}; use B, KiB, MiB or GiB")),
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 1048576, 16KiB or 10MiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(ByteSize::parse("16KiB"), Ok(ByteSize(16384)));
        assert_eq!(ByteSize::parse("10MiB"), Ok(ByteSize(10 * 1024 * 1024)));
        assert_eq!(ByteSize::parse("512"), Ok(ByteSize(512)));
        assert!(ByteSize::parse("10 parsecs").is_err());
        assert!(ByteSize::parse("99999999999999999999GiB").is_err());
    }
}
