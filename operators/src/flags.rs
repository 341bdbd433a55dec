//! Flags: a reading that passed with a remark. Stored in `readings.flags` as a
//! comma-separated list of stable codes (null when there is none), e.g.
//! `spike,unit_converted`. Query with `flags LIKE '%spike%'`.
//!
//! While a batch moves through the operators the flags are a bit set (`UInt32`).

/// The highest interval of the meter's local day is more than `spike_factor` times
/// its third-highest (computed over the intervals of the day in the same batch).
pub const SPIKE: u32 = 1;
/// The meter reported another resolution earlier on the same local day.
pub const RESOLUTION_MIX: u32 = 1 << 1;
/// The value arrived in Wh and was converted to kWh (tenant `convert_wh`).
pub const UNIT_CONVERTED: u32 = 1 << 2;
/// Sensitive data (a national id, a special-category field) was removed from the
/// message; the reading itself was kept.
pub const SENSITIVE_REMOVED: u32 = 1 << 3;
/// Re-published by `meterline dlq replay`: identifiers were pseudonymized when the
/// record was dead-lettered and are kept as they are.
pub const REPLAYED: u32 = 1 << 4;

/// Every flag with its code, in the order they are written.
pub const ALL: [(u32, &str); 5] = [
    (SPIKE, "spike"),
    (RESOLUTION_MIX, "resolution_mix"),
    (UNIT_CONVERTED, "unit_converted"),
    (SENSITIVE_REMOVED, "sensitive_removed"),
    (REPLAYED, "replayed"),
];

/// The stored text of a bit set (`None` for no flags).
pub fn render(bits: u32) -> Option<String> {
    if bits == 0 {
        return None;
    }
    let codes: Vec<&str> = ALL
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, code)| *code)
        .collect();
    Some(codes.join(","))
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_in_a_stable_order() {
        assert_eq!(super::render(0), None);
        assert_eq!(
            super::render(super::UNIT_CONVERTED | super::SPIKE).as_deref(),
            Some("spike,unit_converted")
        );
    }
}
