//! Typed QEMU command-line building.

use std::fmt::Display;

/// A QEMU option list: `head,key=value,…`. Values are escaped (`,` → `,,`) here and only here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opts(String);

impl Opts {
    /// Starts a list with a driver or type name (`virtio-blk-device`, `user`, `microvm`).
    pub fn new(head: &str) -> Self {
        Opts(escape(head))
    }

    /// Appends `key=value`, escaping the value.
    pub fn set(mut self, key: &str, value: impl Display) -> Self {
        self.0.push(',');
        self.0.push_str(key);
        self.0.push('=');
        self.0.push_str(&escape(&value.to_string()));
        self
    }

    /// Appends `key=value` when `value` is `Some`.
    pub fn set_opt(self, key: &str, value: Option<impl Display>) -> Self {
        match value {
            Some(value) => self.set(key, value),
            None => self,
        }
    }

    /// The rendered list.
    pub fn render(&self) -> &str {
        &self.0
    }
}

fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// A QEMU argument vector under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Argv(Vec<String>);

impl Argv {
    pub fn new() -> Self {
        Argv::default()
    }

    /// A flag without value (`-nodefaults`).
    pub fn flag(&mut self, flag: &str) -> &mut Self {
        self.0.push(flag.to_owned());
        self
    }

    /// A flag with an option list (`-device virtio-blk-device,drive=root`).
    pub fn opts(&mut self, flag: &str, opts: Opts) -> &mut Self {
        self.0.push(flag.to_owned());
        self.0.push(opts.0);
        self
    }

    /// A flag with a plain value that QEMU does not split on commas (`-m 4096`, `-kernel P`,
    /// `-append LINE`).
    pub fn value(&mut self, flag: &str, value: impl Display) -> &mut Self {
        self.0.push(flag.to_owned());
        self.0.push(value.to_string());
        self
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opts_value_with_comma_is_doubled() {
        let opts = Opts::new("local")
            .set("path", "/home/u/a,b")
            .set("id", "fs0");
        assert_eq!(opts.render(), "local,path=/home/u/a,,b,id=fs0");
    }

    #[test]
    fn plain_value_is_not_escaped() {
        let mut argv = Argv::new();
        argv.value("-append", "console=ttyS0 a,b");
        assert_eq!(argv.into_vec(), ["-append", "console=ttyS0 a,b"]);
    }

    #[test]
    fn set_opt_none_adds_nothing() {
        let opts = Opts::new("x").set_opt("k", None::<u32>);
        assert_eq!(opts.render(), "x");
    }
}
