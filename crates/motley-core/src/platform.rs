//! OCI platforms (`linux/arm/v7`): what a node's userland is, what an image offers,
//! and which of an image's platforms a node may run.
//!
//! The rules, in one place (the containerd driver and the scheduler both use them):
//!
//! - A node's **image platform** is its *userland*'s (the ELF class and machine of the
//!   system's own programs), not its kernel's: a 32-bit Raspberry Pi OS on a 64-bit
//!   kernel is `linux/arm/v7`. Discovery decides it; where it cannot be known (a capture
//!   with only `/proc` and `/sys`), it is unknown and no image is placed by guess.
//! - Names are Go's and OCI's: `amd64`, `386`, `arm64`, `arm`, `riscv64`, `ppc64le`,
//!   `s390x`, `loong64`, `mips64le`...
//! - Normalized as containerd does: `arm64` with no variant is `arm64/v8`; `arm` with no
//!   variant is `arm/v7`; `aarch64` and `x86_64` are spelled `arm64` and `amd64`.
//! - A node runs, in order of preference: its own platform; for `arm/vN`, every lower
//!   ARM variant down to v5 (ARM is backward compatible within 32-bit). Nothing else:
//!   no `386` on `amd64` (needs the kernel's IA-32 emulation, which not every kernel
//!   has) and no 32-bit ARM on `arm64` (many arm64 cores, Apple's and Neoverse V, cannot
//!   run AArch32 at all). An image without a platform the node runs is refused with both
//!   lists named, never pulled.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An OCI platform: operating system, architecture and (for ARM) variant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, `arm`, `386`, `riscv64`...
    pub architecture: String,
    /// `v8` for arm64, `v5`/`v6`/`v7` for arm; empty where the architecture has none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl Platform {
    /// A platform from its parts, normalized.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Platform {
        Platform {
            os: os.to_ascii_lowercase(),
            architecture: architecture.to_ascii_lowercase(),
            variant: variant.to_ascii_lowercase(),
        }
        .normalized()
    }

    /// Parses `os/arch[/variant]` (`linux/arm/v7`, `linux/amd64`).
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform::new(os, arch, "")),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => {
                Ok(Platform::new(os, arch, v))
            }
            _ => Err(format!(
                "{s:?} is not a platform: expected OS/ARCH or OS/ARCH/VARIANT (linux/arm/v7)"
            )),
        }
    }

    /// containerd's normalization: Go's architecture names, default variants.
    pub fn normalized(mut self) -> Platform {
        let arch = match self.architecture.as_str() {
            "x86_64" | "x86-64" => "amd64",
            "i386" | "i486" | "i586" | "i686" => "386",
            "aarch64" => "arm64",
            "armhf" => {
                if self.variant.is_empty() {
                    self.variant = "v7".into();
                }
                "arm"
            }
            "armel" => {
                if self.variant.is_empty() {
                    self.variant = "v5".into();
                }
                "arm"
            }
            _ => "",
        };
        if !arch.is_empty() {
            self.architecture = arch.into();
        }
        match self.architecture.as_str() {
            "arm64" if self.variant.is_empty() || self.variant == "8" => self.variant = "v8".into(),
            "arm" if self.variant.is_empty() => self.variant = "v7".into(),
            "arm" if matches!(self.variant.as_str(), "5" | "6" | "7" | "8") => {
                self.variant = format!("v{}", self.variant)
            }
            "amd64" if self.variant == "v1" => self.variant.clear(),
            _ => {}
        }
        self
    }

    /// The platforms this one runs, most preferred first (see the module's rules).
    pub fn runs(&self) -> Vec<Platform> {
        let me = self.clone().normalized();
        let mut out = vec![me.clone()];
        if me.architecture == "arm"
            && let Some(n) = me
                .variant
                .strip_prefix('v')
                .and_then(|n| n.parse::<u32>().ok())
        {
            for lower in (5..n.min(8)).rev() {
                out.push(Platform::new(&me.os, "arm", &format!("v{lower}")));
            }
        }
        out
    }

    /// Whether a node of this platform can run an image built for `image`.
    pub fn can_run(&self, image: &Platform) -> bool {
        let image = image.clone().normalized();
        self.runs().contains(&image)
    }

    /// Of an image's platforms, the one this node should pull: the most preferred it
    /// runs, or `None` when it runs none of them.
    pub fn choose<'a>(&self, offered: &'a [Platform]) -> Option<&'a Platform> {
        let normalized: Vec<Platform> = offered.iter().map(|p| p.clone().normalized()).collect();
        self.runs()
            .iter()
            .find_map(|want| normalized.iter().position(|p| p == want))
            .map(|i| &offered[i])
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// Why an image cannot run on a node, in words: "image has linux/amd64, linux/arm64;
/// pi3 is linux/arm/v7".
pub fn refusal(node: &str, node_platform: Option<&Platform>, offered: &[Platform]) -> String {
    let list: Vec<String> = offered.iter().map(ToString::to_string).collect();
    let has = if list.is_empty() {
        "image names no platform".to_string()
    } else {
        format!("image has {}", list.join(", "))
    };
    match node_platform {
        Some(p) => format!("{has}; {node} is {p}"),
        None => format!("{has}; {node}'s userland platform is unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).expect("platform")
    }

    #[test]
    fn parses_and_prints_normalized() {
        assert_eq!(p("linux/arm64").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/arm/7").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/armhf").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/armel").to_string(), "linux/arm/v5");
        assert_eq!(p("Linux/AMD64").to_string(), "linux/amd64");
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v7").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn arm_runs_lower_variants_only() {
        let v7 = p("linux/arm/v7");
        assert!(v7.can_run(&p("linux/arm/v6")));
        assert!(v7.can_run(&p("linux/arm/v5")));
        assert!(v7.can_run(&p("linux/arm")));
        assert!(!v7.can_run(&p("linux/arm64")));
        let v6 = p("linux/arm/v6");
        assert!(
            !v6.can_run(&p("linux/arm/v7")),
            "a Pi Zero cannot run ARMv7 code"
        );
        assert!(v6.can_run(&p("linux/arm/v5")));
    }

    #[test]
    fn no_cross_architecture_guesses() {
        assert!(!p("linux/arm64").can_run(&p("linux/arm/v7")));
        assert!(!p("linux/amd64").can_run(&p("linux/386")));
        assert!(!p("linux/amd64").can_run(&p("linux/amd64/v3")));
        assert!(p("linux/arm64").can_run(&p("linux/arm64/v8")));
        assert!(!p("linux/arm64").can_run(&p("windows/arm64")));
    }

    #[test]
    fn chooses_the_most_preferred_offer() {
        let offered = [
            p("linux/amd64"),
            p("linux/arm/v6"),
            p("linux/arm/v7"),
            p("linux/arm64"),
        ];
        assert_eq!(p("linux/arm/v7").choose(&offered), Some(&offered[2]));
        assert_eq!(p("linux/arm/v6").choose(&offered), Some(&offered[1]));
        assert_eq!(p("linux/arm64").choose(&offered), Some(&offered[3]));
        assert_eq!(p("linux/riscv64").choose(&offered), None);
        assert_eq!(
            refusal(
                "pi3",
                Some(&p("linux/arm/v7")),
                &[p("linux/amd64"), p("linux/arm64")]
            ),
            "image has linux/amd64, linux/arm64/v8; pi3 is linux/arm/v7"
        );
        assert_eq!(
            refusal("x", None, &[]),
            "image names no platform; x's userland platform is unknown"
        );
    }
}
