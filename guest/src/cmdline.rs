//! The `ccvm.*` words of the kernel command line (set by the backend).

use std::collections::BTreeMap;

/// `ccvm.key=value` words, keys without the prefix.
pub fn parse(cmdline: &str) -> BTreeMap<String, String> {
    cmdline
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("ccvm."))
        .filter_map(|word| word.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ccvm_words_are_kept() {
        let words = parse("quiet console=ttyS0 ccvm.virtio=mmio ccvm.shares=9p tsc_early_khz=1");
        assert_eq!(words.len(), 2);
        assert_eq!(words["virtio"], "mmio");
        assert_eq!(words["shares"], "9p");
    }
}
