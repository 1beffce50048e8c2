//! `--vmodule` (`logging.vmodule`): klog's per-file verbosity, on tracing.
//!
//! klog matches `pattern=N` against the Go source file an event comes from;
//! tracing records the Rust source file of every event, so the same rule
//! applies here:
//!
//! - A pattern without `/` is matched against the file's base name without
//!   `.rs` (`sync_loop` for `proxy-core/src/runtime/sync_loop.rs`); for a
//!   `mod.rs`, also against its directory's name (`manifest` for
//!   `…/source/manifest/mod.rs`).
//! - A pattern with `/` is matched against as many trailing path components
//!   (`runtime/sync_loop`).
//! - `*` matches any run of characters and `?` any one character, neither
//!   crossing a `/`, as in klog (Go's `filepath.Match`); `[…]` classes are
//!   not supported and match literally.
//! - `N` maps to a level as `-v` does ([`super::verbosity_level`]): 0-1
//!   info, 2-3 debug, 4+ trace. The first matching pattern decides, and it
//!   replaces `-v` (and `RUST_LOG`) for that file, lowering as well as
//!   raising it, as klog's does. Warnings and errors are always logged.

use proxy_core::config::VModuleItem;
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Metadata, span};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Filter};

/// One parsed `pattern=N`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// The pattern's `/`-separated components.
    components: Vec<String>,
    /// The most verbose level logged for matching files.
    level: LevelFilter,
}

/// The `--vmodule` rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VModule {
    rules: Vec<Rule>,
}

impl VModule {
    /// The rules of `items`, in order.
    pub fn new(items: &[VModuleItem]) -> VModule {
        VModule {
            rules: items
                .iter()
                .map(|item| Rule {
                    components: item
                        .file_pattern
                        .trim_end_matches(".rs")
                        .split('/')
                        .map(str::to_string)
                        .collect(),
                    level: LevelFilter::from_level(super::verbosity_level(item.verbosity)),
                })
                .collect(),
        }
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The level of the first rule matching source file `file`, if any.
    pub fn level_for(&self, file: &str) -> Option<LevelFilter> {
        let path: Vec<&str> = file
            .strip_suffix(".rs")
            .unwrap_or(file)
            .split(['/', '\\'])
            .collect();
        self.rules
            .iter()
            .find(|rule| matches_path(&rule.components, &path))
            .map(|rule| rule.level)
    }

    /// The most verbose level of any rule.
    fn max_level(&self) -> Option<LevelFilter> {
        self.rules.iter().map(|rule| rule.level).max()
    }
}

/// Whether `pattern`'s components match the trailing components of `path`
/// (for a one-component pattern and a `mod.rs`, also the directory).
fn matches_path(pattern: &[String], path: &[&str]) -> bool {
    let Some(start) = path.len().checked_sub(pattern.len()) else {
        return false;
    };
    let tail_matches = |tail: &[&str]| {
        pattern
            .iter()
            .zip(tail)
            .all(|(pattern, name)| glob(pattern, name))
    };
    if tail_matches(&path[start..]) {
        return true;
    }
    match (pattern, path) {
        ([only], [.., dir, "mod"]) => glob(only, dir),
        _ => false,
    }
}

/// Go's `filepath.Match` for one path component, without classes: `*` any
/// run of characters, `?` any one character.
fn glob(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // Iterative matching with backtracking to the last `*`.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// The filter of the log output: the `--vmodule` rules for the files they
/// match, the `-v`/`RUST_LOG` filter for every other event.
#[derive(Debug)]
pub struct LogFilter {
    env: EnvFilter,
    vmodule: VModule,
}

impl LogFilter {
    /// `vmodule` on top of `env`.
    pub fn new(env: EnvFilter, vmodule: VModule) -> LogFilter {
        LogFilter { env, vmodule }
    }

    /// The level `vmodule` sets for `meta`'s source file, if it sets one.
    fn vmodule_level(&self, meta: &Metadata<'_>) -> Option<LevelFilter> {
        if self.vmodule.is_empty() {
            return None;
        }
        self.vmodule.level_for(meta.file()?)
    }
}

impl<S> Filter<S> for LogFilter {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        match self.vmodule_level(meta) {
            Some(level) => level >= *meta.level(),
            None => Filter::<S>::enabled(&self.env, meta, cx),
        }
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        match self.vmodule_level(meta) {
            Some(level) if level >= *meta.level() => Interest::always(),
            Some(_) => Interest::never(),
            None => Filter::<S>::callsite_enabled(&self.env, meta),
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        let env = Filter::<S>::max_level_hint(&self.env)?;
        Some(
            self.vmodule
                .max_level()
                .map_or(env, |vmodule| env.max(vmodule)),
        )
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        Filter::<S>::on_new_span(&self.env, attrs, id, cx);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
        Filter::<S>::on_record(&self.env, id, values, cx);
    }

    fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
        Filter::<S>::on_enter(&self.env, id, cx);
    }

    fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
        Filter::<S>::on_exit(&self.env, id, cx);
    }

    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        Filter::<S>::on_close(&self.env, id, cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmodule(spec: &[(&str, u32)]) -> VModule {
        VModule::new(
            &spec
                .iter()
                .map(|(pattern, verbosity)| VModuleItem {
                    file_pattern: pattern.to_string(),
                    verbosity: *verbosity,
                })
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn glob_is_go_filepath_match_without_classes() {
        assert!(glob("sync_loop", "sync_loop"));
        assert!(!glob("sync_loop", "sync_loops"));
        assert!(glob("sync_*", "sync_loop"));
        assert!(glob("*", ""));
        assert!(glob("*loop", "sync_loop"));
        assert!(glob("s?nc*p", "sync_loop"));
        assert!(glob("*a*b*", "xxaybzzb"));
        assert!(!glob("*a*b", "xxaybzzc"));
        assert!(!glob("?", ""));
        assert!(glob("[ab]", "[ab]"), "classes match literally");
    }

    #[test]
    fn a_pattern_matches_the_base_name_without_rs() {
        let v = vmodule(&[("sync_loop", 4)]);
        assert_eq!(
            v.level_for("proxy-core/src/runtime/sync_loop.rs"),
            Some(LevelFilter::TRACE)
        );
        assert_eq!(v.level_for("proxy-core/src/runtime/sync_loop_x.rs"), None);
        assert_eq!(v.level_for("sync_loop.rs"), Some(LevelFilter::TRACE));
    }

    #[test]
    fn a_mod_rs_also_matches_its_directory() {
        let v = vmodule(&[("manifest", 2)]);
        assert_eq!(
            v.level_for("proxy-core/src/runtime/source/manifest/mod.rs"),
            Some(LevelFilter::DEBUG)
        );
        assert_eq!(
            v.level_for("proxy-core/src/runtime/source/manifest/files.rs"),
            None
        );
    }

    #[test]
    fn a_pattern_with_slashes_matches_trailing_components() {
        let v = vmodule(&[("runtime/sync_*", 3)]);
        assert_eq!(
            v.level_for("proxy-core/src/runtime/sync_loop.rs"),
            Some(LevelFilter::DEBUG)
        );
        assert_eq!(v.level_for("proxy-core/src/other/sync_loop.rs"), None);
        assert_eq!(v.level_for("sync_loop.rs"), None);
    }

    #[test]
    fn the_first_matching_rule_wins_and_n_maps_like_v() {
        let v = vmodule(&[("app", 0), ("*", 5)]);
        assert_eq!(
            v.level_for("kube-proxy/src/app.rs"),
            Some(LevelFilter::INFO)
        );
        assert_eq!(
            v.level_for("kube-proxy/src/options.rs"),
            Some(LevelFilter::TRACE)
        );
        assert_eq!(v.max_level(), Some(LevelFilter::TRACE));
        assert_eq!(VModule::default().max_level(), None);
    }
}
