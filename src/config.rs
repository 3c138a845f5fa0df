//! Configuration: environment variable names, defaults, reading the environment, and the
//! resolved settings the builder hands to the layer, the worker and the sinks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing_core::Level;

use crate::builder::Builder;
use crate::capture::layer::Resolver;
use crate::capture::visit::DEFAULT_MAX_FIELD_BYTES;
use crate::deliver::sink::Sink;
use crate::deliver::sink::http::{HttpConfig, HttpSink};
use crate::diag;
use crate::error::Error;
use crate::rows::cost::PriceTable;
use crate::rows::mask::MaskFn;
use crate::trace::route::RemoteParent;

/// Environment variable names (the official SDKs' names, protocol §2).
pub(crate) mod env {
    pub(crate) const API_KEY: &str = "BRAINTRUST_API_KEY";
    pub(crate) const APP_URL: &str = "BRAINTRUST_APP_URL";
    pub(crate) const API_URL: &str = "BRAINTRUST_API_URL";
    pub(crate) const ORG_NAME: &str = "BRAINTRUST_ORG_NAME";
    pub(crate) const PROJECT: &str = "BRAINTRUST_PROJECT";
    pub(crate) const PROJECT_ID: &str = "BRAINTRUST_PROJECT_ID";
    pub(crate) const BATCH_SIZE: &str = "BRAINTRUST_DEFAULT_BATCH_SIZE";
    pub(crate) const MAX_REQUEST_SIZE: &str = "BRAINTRUST_MAX_REQUEST_SIZE";
    pub(crate) const NUM_RETRIES: &str = "BRAINTRUST_NUM_RETRIES";
    pub(crate) const QUEUE_SIZE: &str = "BRAINTRUST_QUEUE_SIZE";
    pub(crate) const HTTP_TIMEOUT: &str = "BRAINTRUST_HTTP_TIMEOUT";
    pub(crate) const FAILED_PAYLOADS_DIR: &str = "BRAINTRUST_FAILED_PUBLISH_PAYLOADS_DIR";
    pub(crate) const ALL_PAYLOADS_DIR: &str = "BRAINTRUST_ALL_PUBLISH_PAYLOADS_DIR";
    pub(crate) const LOCAL_FILE: &str = "BRAINTRUST_LOCAL_FILE";
    pub(crate) const PARENT: &str = "BRAINTRUST_PARENT";
    pub(crate) const SAMPLE_RATE: &str = "BRAINTRUST_SAMPLE_RATE";
    pub(crate) const SPOOL_DIR: &str = "BRAINTRUST_SPOOL_DIR";
    pub(crate) const SPOOL_MAX_BYTES: &str = "BRAINTRUST_SPOOL_MAX_BYTES";
    pub(crate) const DISABLED: &str = "BRAINTRUST_DISABLED";
    pub(crate) const CONSOLE_TREE: &str = "BRAINTRUST_CONSOLE_TREE";
}

/// Defaults, one constant each.
pub(crate) mod defaults {
    use std::time::Duration;
    pub(crate) const APP_URL: &str = "https://www.braintrust.dev";
    pub(crate) const PROJECT: &str = "Global";
    pub(crate) const BATCH_SIZE: usize = 100;
    pub(crate) const MAX_REQUEST_SIZE: usize = 6 * 1024 * 1024;
    pub(crate) const NUM_RETRIES: u32 = 2;
    pub(crate) const QUEUE_SIZE: usize = 25_000;
    pub(crate) const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
    pub(crate) const LOCAL_FILE: &str = "braintrust-spans.jsonl";
    pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
    pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
    pub(crate) const MAX_IN_FLIGHT: usize = 4;
    pub(crate) const RETRY_BASE_DELAY: Duration = Duration::from_secs(1);
    pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
}

/// Reads settings from an environment: the process's, or a map given for tests.
struct EnvReader<'a> {
    map: Option<&'a HashMap<String, String>>,
}

impl EnvReader<'_> {
    /// The value, with blank counted as unset (protocol §2).
    fn get(&self, name: &str) -> Option<String> {
        let value = match self.map {
            Some(m) => m.get(name).cloned(),
            None => std::env::var(name).ok(),
        }?;
        let trimmed = value.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }

    /// A number; a value that does not parse is ignored with a warning.
    fn parse<T: std::str::FromStr>(&self, name: &'static str) -> Option<T> {
        let raw = self.get(name)?;
        match raw.parse::<T>() {
            Ok(v) => Some(v),
            Err(_) => {
                diag::warn_once(
                    name,
                    format_args!("{name}={raw:?} is not a valid number; using the default"),
                );
                None
            }
        }
    }

    /// A count that must be above zero; zero is ignored with a warning.
    fn positive(&self, name: &'static str) -> Option<usize> {
        match self.parse::<usize>(name)? {
            0 => {
                diag::warn_once(
                    name,
                    format_args!("{name}=0 is not allowed (must be above zero); using the default"),
                );
                None
            }
            v => Some(v),
        }
    }

    /// `BRAINTRUST_QUEUE_SIZE`: a positive number up to [`MAX_QUEUE_SIZE`]; anything else is
    /// ignored with a warning.
    fn queue_size(&self) -> Option<usize> {
        let name = env::QUEUE_SIZE;
        match queue_size(name, self.positive(name)?) {
            Ok(v) => Some(v),
            Err(e) => {
                diag::warn_once(name, format_args!("{e}; using the default"));
                None
            }
        }
    }

    /// A switch: `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off` (any case); anything
    /// else is ignored with a warning.
    fn flag(&self, name: &'static str) -> Option<bool> {
        let raw = self.get(name)?;
        match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" => Some(false),
            _ => {
                diag::warn_once(
                    name,
                    format_args!(
                        "{name}={raw:?} is not one of 1/true/yes/on or 0/false/no/off; using the default"
                    ),
                );
                None
            }
        }
    }

    /// An http(s) URL; anything else is ignored with a warning.
    fn url(&self, name: &'static str) -> Option<String> {
        let raw = self.get(name)?;
        match valid_url(name, raw.clone()) {
            Ok(u) => Some(u),
            Err(e) => {
                diag::warn_once(name, format_args!("{e}; using the default"));
                None
            }
        }
    }

    /// Seconds, as a float (the Python SDK accepts fractions).
    fn seconds(&self, name: &'static str) -> Option<Duration> {
        let secs: f64 = self.parse(name)?;
        match Duration::try_from_secs_f64(secs) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                diag::warn_once(
                    name,
                    format_args!("{name}={secs} is not a positive duration; using the default"),
                );
                None
            }
        }
    }
}

/// The fully resolved configuration.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) api_key: Option<String>,
    pub(crate) app_url: String,
    pub(crate) api_url: Option<String>,
    pub(crate) org_name: Option<String>,
    pub(crate) project_name: String,
    pub(crate) project_id: Option<String>,
    pub(crate) batch_size: usize,
    pub(crate) max_request_size: usize,
    pub(crate) num_retries: u32,
    pub(crate) queue_size: usize,
    pub(crate) http_timeout: Duration,
    pub(crate) failed_payloads_dir: Option<PathBuf>,
    pub(crate) all_payloads_dir: Option<PathBuf>,
    pub(crate) local_file: PathBuf,
    pub(crate) flush_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) event_level: Option<Level>,
    pub(crate) orphan_event_level: Option<Level>,
    pub(crate) max_field_bytes: usize,
    pub(crate) live: bool,
    pub(crate) max_in_flight: usize,
    pub(crate) retry_base_delay: Duration,
    pub(crate) max_retry_delay: Duration,
    pub(crate) parent: Option<RemoteParent>,
    pub(crate) sample_rate: f64,
    pub(crate) keep_errors: bool,
    pub(crate) mask: Option<MaskFn>,
    pub(crate) prices: Option<PriceTable>,
    pub(crate) spool_dir: Option<PathBuf>,
    pub(crate) spool_max_bytes: u64,
    pub(crate) spill: bool,
    /// `false`: the layer records nothing and the worker writes nothing.
    pub(crate) enabled: bool,
    /// Each finished trace is printed to stderr as a tree.
    pub(crate) console_tree: bool,
    /// The project name when one was given (in code or the environment), not the default:
    /// local rows name it, and rows recorded without one go to whichever project
    /// `upload_files` is given.
    pub(crate) named_project: Option<String>,
}

impl Config {
    /// The Braintrust uploader for a configuration with an API key, the function that
    /// tells the organization and project id once it has logged in, and the uploader itself
    /// (evals make their REST calls on its session).
    pub(crate) fn upload_sink(&self) -> Result<(Arc<dyn Sink>, Resolver, HttpSink), Error> {
        let config = self;
        let target = match &config.project_id {
            Some(id) => format!("project id {id}"),
            None => format!("project {:?}", config.project_name),
        };
        let description = format!(
            "uploading spans to Braintrust ({target} at {})",
            config.app_url
        );
        let (sink, http) = crate::deliver::sink::upload_sink(
            HttpConfig {
                api_key: config.api_key.clone().unwrap_or_default(),
                app_url: config.app_url.clone(),
                api_url: config.api_url.clone(),
                org_name: config.org_name.clone(),
                project_name: config.project_name.clone(),
                project_id: config.project_id.clone(),
                batch_size: config.batch_size,
                max_request_size: config.max_request_size,
                num_retries: config.num_retries,
                retry_base_delay: config.retry_base_delay,
                max_retry_delay: config.max_retry_delay,
                http_timeout: config.http_timeout,
                // The worker already runs up to `max_in_flight` deliveries at once; each posts
                // its batches one after another, so no more than `max_in_flight` requests are
                // in flight.
                max_in_flight: 1,
                failed_payloads_dir: config.failed_payloads_dir.clone(),
                all_payloads_dir: config.all_payloads_dir.clone(),
                user_agent: concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_PKG_VERSION"))
                    .to_owned(),
            },
            description,
        )?;
        let resolver = http.clone();
        Ok((sink, Arc::new(move || resolver.resolved()), http))
    }
}

fn positive(setting: &'static str, v: usize) -> Result<usize, Error> {
    if v == 0 {
        Err(Error::InvalidConfig {
            setting,
            reason: "must be greater than zero".into(),
        })
    } else {
        Ok(v)
    }
}

fn nonzero(setting: &'static str, d: Duration) -> Result<Duration, Error> {
    if d.is_zero() {
        Err(Error::InvalidConfig {
            setting,
            reason: "must be longer than zero (every request would time out)".into(),
        })
    } else {
        Ok(d)
    }
}

/// The largest queue: two slots of 176 bytes per span, allocated up front (about 3 GB).
pub(crate) const MAX_QUEUE_SIZE: usize = 1 << 23;

/// A queue size, checked; `setting` names where it came from (the builder method or the
/// environment variable).
fn queue_size(setting: &'static str, v: usize) -> Result<usize, Error> {
    let v = positive(setting, v)?;
    if v > MAX_QUEUE_SIZE {
        return Err(Error::InvalidConfig {
            setting,
            reason: format!("{v} is above the largest queue, {MAX_QUEUE_SIZE}"),
        });
    }
    Ok(v)
}

fn valid_url(setting: &'static str, url: String) -> Result<String, Error> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::InvalidConfig {
            setting,
            reason: format!("{url:?} is not an http:// or https:// URL"),
        });
    }
    let credentials =
        reqwest::Url::parse(&url).is_ok_and(|u| !u.username().is_empty() || u.password().is_some());
    if credentials {
        // Not echoed: the part before `@` may be a password.
        return Err(Error::InvalidConfig {
            setting,
            reason: "the URL carries a user name or password (user:password@host); \
                     the API key is the only credential sent"
                .into(),
        });
    }
    Ok(url.trim_end_matches('/').to_owned())
}

impl Builder {
    /// Resolves defaults, environment and code settings.
    pub(crate) fn config(&self) -> Result<Config, Error> {
        let env = EnvReader {
            map: self.env.as_ref(),
        };
        let app_url = match self.app_url.clone() {
            Some(u) => valid_url("with_app_url", u)?,
            None => env
                .url(env::APP_URL)
                .unwrap_or_else(|| defaults::APP_URL.to_owned()),
        };
        let api_url = match self.api_url.clone() {
            Some(u) => Some(valid_url("with_api_url", u)?),
            None => env.url(env::API_URL),
        };
        if let Some(reason) = &self.invalid_price {
            return Err(Error::InvalidConfig {
                setting: "with_model_price",
                reason: reason.clone(),
            });
        }
        let sample_rate = match self.sample_rate {
            Some(r) if (0.0..=1.0).contains(&r) => r,
            Some(r) => {
                return Err(Error::InvalidConfig {
                    setting: "with_sample_rate",
                    reason: format!("{r} is not between 0 and 1"),
                });
            }
            None => match env.parse::<f64>(env::SAMPLE_RATE) {
                Some(r) if (0.0..=1.0).contains(&r) => r,
                Some(r) => {
                    diag::warn_once(
                        env::SAMPLE_RATE,
                        format_args!(
                            "BRAINTRUST_SAMPLE_RATE={r} is not between 0 and 1; keeping every trace"
                        ),
                    );
                    1.0
                }
                None => 1.0,
            },
        };
        let prices = if self.cost_estimation == Some(false) {
            None
        } else {
            let mut overrides = PriceTable::default();
            if let Some(path) = &self.price_file {
                let text = std::fs::read_to_string(path).map_err(|e| Error::InvalidConfig {
                    setting: "with_model_prices_file",
                    reason: format!("cannot read {}: {e}", path.display()),
                })?;
                overrides = PriceTable::from_json_str(&text).map_err(|e| Error::InvalidConfig {
                    setting: "with_model_prices_file",
                    reason: format!("{}: {e}", path.display()),
                })?;
            }
            if let Some(code) = &self.prices {
                overrides = overrides.with_overrides(code);
            }
            Some(PriceTable::builtin().with_overrides(&overrides))
        };
        let mask: Option<MaskFn> = match (self.scrub_secrets.unwrap_or(false), self.mask.clone()) {
            (false, user) => user,
            (true, None) => Some(Arc::new(crate::rows::mask::scrub_secrets)),
            (true, Some(user)) => Some(Arc::new(move |v: &serde_json::Value| {
                user(&crate::rows::mask::scrub_secrets(v))
            })),
        };
        let config = Config {
            spool_dir: self
                .spool_dir
                .clone()
                .or_else(|| env.get(env::SPOOL_DIR).map(PathBuf::from)),
            spool_max_bytes: self
                .spool_max_bytes
                .or_else(|| env.parse(env::SPOOL_MAX_BYTES))
                .unwrap_or(crate::deliver::spool::DEFAULT_MAX_BYTES),
            spill: self.spill.unwrap_or(false),
            enabled: self
                .enabled
                .or_else(|| env.flag(env::DISABLED).map(|disabled| !disabled))
                .unwrap_or(true),
            console_tree: self
                .console_tree
                .or_else(|| env.flag(env::CONSOLE_TREE))
                .unwrap_or(false),
            sample_rate,
            keep_errors: self.keep_errors.unwrap_or(false),
            mask,
            prices,
            api_key: self
                .api_key
                .clone()
                .or_else(|| env.get(env::API_KEY))
                .filter(|k| !k.trim().is_empty())
                .map(|k| k.trim().to_owned()),
            app_url,
            api_url,
            org_name: self.org_name.clone().or_else(|| env.get(env::ORG_NAME)),
            named_project: self.project_name.clone().or_else(|| env.get(env::PROJECT)),
            project_name: self
                .project_name
                .clone()
                .or_else(|| env.get(env::PROJECT))
                .unwrap_or_else(|| defaults::PROJECT.to_owned()),
            project_id: self.project_id.clone().or_else(|| env.get(env::PROJECT_ID)),
            // A zero from the environment is ignored with a warning above: a zero here was
            // set in code.
            batch_size: positive(
                "with_batch_size",
                self.batch_size
                    .or_else(|| env.positive(env::BATCH_SIZE))
                    .unwrap_or(defaults::BATCH_SIZE),
            )?,
            max_request_size: positive(
                "with_max_request_size",
                self.max_request_size
                    .or_else(|| env.positive(env::MAX_REQUEST_SIZE))
                    .unwrap_or(defaults::MAX_REQUEST_SIZE),
            )?,
            num_retries: self
                .num_retries
                .or_else(|| env.parse(env::NUM_RETRIES))
                .unwrap_or(defaults::NUM_RETRIES),
            queue_size: match self.queue_size {
                Some(size) => queue_size("with_queue_size", size)?,
                None => env.queue_size().unwrap_or(defaults::QUEUE_SIZE),
            },
            http_timeout: nonzero(
                "with_http_timeout",
                self.http_timeout
                    .or_else(|| env.seconds(env::HTTP_TIMEOUT))
                    .unwrap_or(defaults::HTTP_TIMEOUT),
            )?,
            failed_payloads_dir: self
                .failed_payloads_dir
                .clone()
                .or_else(|| env.get(env::FAILED_PAYLOADS_DIR).map(PathBuf::from)),
            all_payloads_dir: self
                .all_payloads_dir
                .clone()
                .or_else(|| env.get(env::ALL_PAYLOADS_DIR).map(PathBuf::from)),
            local_file: self
                .local_file
                .clone()
                .or_else(|| env.get(env::LOCAL_FILE).map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(defaults::LOCAL_FILE)),
            flush_timeout: self.flush_timeout.unwrap_or(defaults::FLUSH_TIMEOUT),
            shutdown_timeout: self.shutdown_timeout.unwrap_or(defaults::SHUTDOWN_TIMEOUT),
            event_level: self.event_level.unwrap_or(Some(Level::INFO)),
            orphan_event_level: self.orphan_event_level.unwrap_or(Some(Level::WARN)),
            max_field_bytes: positive(
                "with_max_field_bytes",
                self.max_field_bytes.unwrap_or(DEFAULT_MAX_FIELD_BYTES),
            )?,
            live: self.live.unwrap_or(false),
            max_in_flight: positive(
                "with_max_in_flight",
                self.max_in_flight.unwrap_or(defaults::MAX_IN_FLIGHT),
            )?,
            retry_base_delay: self.retry_base_delay.unwrap_or(defaults::RETRY_BASE_DELAY),
            max_retry_delay: self.max_retry_delay.unwrap_or(defaults::MAX_RETRY_DELAY),
            parent: match (&self.parent, env.get(env::PARENT)) {
                (Some(code), _) => Some(crate::ext::default_parent(code)?),
                (None, Some(from_env)) => match crate::ext::default_parent(&from_env) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        diag::warn_once(
                            env::PARENT,
                            format_args!("BRAINTRUST_PARENT is ignored: {e}"),
                        );
                        None
                    }
                },
                (None, None) => None,
            },
        };
        Ok(if config.enabled {
            config
        } else {
            switched_off(config)
        })
    }
}

/// A switched-off layer reads and writes nothing: no spool, no console tree, no live start
/// rows, and the smallest queue (only the guard's flush and shutdown ever pass through it).
fn switched_off(config: Config) -> Config {
    Config {
        spool_dir: None,
        spill: false,
        console_tree: false,
        live: false,
        queue_size: 1,
        ..config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::Builder;

    fn config(vars: &[(&str, &str)]) -> Result<Config, Error> {
        Builder::new()
            .with_env_vars(vars.iter().map(|(k, v)| (*k, *v)))
            .config()
    }

    #[test]
    fn defaults_without_environment() {
        let c = config(&[]).expect("valid");
        assert_eq!(c.api_key, None);
        assert_eq!(c.app_url, "https://www.braintrust.dev");
        assert_eq!(c.project_name, "Global");
        assert_eq!(c.batch_size, 100);
        assert_eq!(c.max_request_size, 6 * 1024 * 1024);
        assert_eq!(c.num_retries, 2);
        assert_eq!(c.queue_size, 25_000);
        assert_eq!(c.http_timeout, Duration::from_secs(60));
        assert_eq!(c.local_file, PathBuf::from("braintrust-spans.jsonl"));
        assert!(!c.live);
    }

    #[test]
    fn environment_is_read_and_blank_means_unset() {
        let c = config(&[
            ("BRAINTRUST_API_KEY", "  "),
            ("BRAINTRUST_PROJECT", "agents"),
            ("BRAINTRUST_APP_URL", "http://127.0.0.1:9/"),
            ("BRAINTRUST_DEFAULT_BATCH_SIZE", "7"),
            ("BRAINTRUST_HTTP_TIMEOUT", "2.5"),
            ("BRAINTRUST_QUEUE_SIZE", "not-a-number"),
            ("BRAINTRUST_LOCAL_FILE", "/tmp/x.jsonl"),
        ])
        .expect("valid");
        assert_eq!(c.api_key, None);
        assert_eq!(c.project_name, "agents");
        assert_eq!(c.app_url, "http://127.0.0.1:9");
        assert_eq!(c.batch_size, 7);
        assert_eq!(c.http_timeout, Duration::from_millis(2500));
        assert_eq!(
            c.queue_size, 25_000,
            "invalid value falls back to the default"
        );
        assert_eq!(c.local_file, PathBuf::from("/tmp/x.jsonl"));
    }

    #[test]
    fn code_overrides_environment() {
        let c = Builder::new()
            .with_env_vars([
                ("BRAINTRUST_PROJECT", "env"),
                ("BRAINTRUST_NUM_RETRIES", "5"),
            ])
            .with_project_name("code")
            .with_num_retries(1)
            .config()
            .expect("valid");
        assert_eq!(c.project_name, "code");
        assert_eq!(c.num_retries, 1);
    }

    #[test]
    fn invalid_code_settings_are_errors() {
        let e = Builder::new().with_queue_size(0).config().err();
        assert!(matches!(
            e,
            Some(Error::InvalidConfig {
                setting: "with_queue_size",
                ..
            })
        ));
        let e = Builder::new().with_app_url("ftp://x").config().err();
        assert!(e.is_some_and(|e| e.to_string().contains("with_app_url")));
        // The same values from the environment fall back to the defaults (with a warning).
        let c = config(&[
            ("BRAINTRUST_APP_URL", "ftp://x"),
            ("BRAINTRUST_QUEUE_SIZE", "0"),
            ("BRAINTRUST_DEFAULT_BATCH_SIZE", "0"),
        ])
        .expect("environment never fails the build");
        assert_eq!(c.app_url, "https://www.braintrust.dev");
        assert_eq!(c.queue_size, 25_000);
        assert_eq!(c.batch_size, 100);
    }

    /// A value set in code is reported under the builder method that set it, never under
    /// an environment variable the program does not use.
    #[test]
    fn invalid_code_settings_name_their_builder_method() {
        let cases: [(&str, Builder); 9] = [
            ("with_batch_size", Builder::new().with_batch_size(0)),
            (
                "with_max_request_size",
                Builder::new().with_max_request_size(0),
            ),
            ("with_queue_size", Builder::new().with_queue_size(0)),
            ("with_sample_rate", Builder::new().with_sample_rate(2.0)),
            ("with_app_url", Builder::new().with_app_url("ftp://x")),
            ("with_api_url", Builder::new().with_api_url("x")),
            (
                "with_http_timeout",
                Builder::new().with_http_timeout(Duration::ZERO),
            ),
            (
                "with_max_field_bytes",
                Builder::new().with_max_field_bytes(0),
            ),
            ("with_max_in_flight", Builder::new().with_max_in_flight(0)),
        ];
        for (method, builder) in cases {
            let error = builder.config().err();
            let text = error.as_ref().map(ToString::to_string).unwrap_or_default();
            assert!(
                matches!(error, Some(Error::InvalidConfig { setting, .. }) if setting == method),
                "{method}: {text}"
            );
            assert!(!text.contains("BRAINTRUST_"), "{text}");
        }
        // The same mistakes in the environment fall back to the default (with a warning
        // that names the variable).
        let c = config(&[
            ("BRAINTRUST_SAMPLE_RATE", "2"),
            ("BRAINTRUST_MAX_REQUEST_SIZE", "0"),
            ("BRAINTRUST_HTTP_TIMEOUT", "0"),
        ])
        .expect("environment never fails the build");
        assert_eq!((c.sample_rate, c.max_request_size), (1.0, 6 * 1024 * 1024));
        assert_eq!(c.http_timeout, Duration::from_secs(60));
    }

    #[test]
    fn the_off_switch_and_the_console_tree_read_code_then_environment() {
        let c = config(&[]).expect("valid");
        assert!(c.enabled && !c.console_tree, "on, and no tree, by default");
        for (value, enabled) in [
            ("1", false),
            ("true", false),
            ("ON", false),
            ("0", true),
            ("no", true),
            ("maybe", true),
        ] {
            let c = config(&[("BRAINTRUST_DISABLED", value)]).expect("valid");
            assert_eq!(c.enabled, enabled, "BRAINTRUST_DISABLED={value}");
        }
        let c = config(&[("BRAINTRUST_CONSOLE_TREE", "yes")]).expect("valid");
        assert!(c.console_tree);
        let c = Builder::new()
            .with_env_vars([
                ("BRAINTRUST_DISABLED", "1"),
                ("BRAINTRUST_CONSOLE_TREE", "1"),
            ])
            .with_enabled(true)
            .with_console_tree(false)
            .config()
            .expect("valid");
        assert!(
            c.enabled && !c.console_tree,
            "code wins over the environment"
        );
    }

    #[test]
    fn a_url_with_a_password_is_refused_without_showing_it() {
        for url in [
            "http://user:hunter2@127.0.0.1:9/api",
            "https://hunter2@example.com",
        ] {
            let e = Builder::new().with_app_url(url).config().err();
            let text = e.map(|e| e.to_string()).unwrap_or_default();
            assert!(text.contains("user name or password"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
            let c = config(&[("BRAINTRUST_APP_URL", url)]).expect("environment never fails");
            assert_eq!(c.app_url, "https://www.braintrust.dev");
        }
        // An `@` in the path is not userinfo.
        let c = Builder::new()
            .with_app_url("https://example.com/a@b")
            .config()
            .expect("valid");
        assert_eq!(c.app_url, "https://example.com/a@b");
    }

    #[test]
    fn a_zero_http_timeout_is_an_error() {
        let e = Builder::new()
            .with_http_timeout(Duration::ZERO)
            .config()
            .err();
        assert!(
            e.is_some_and(|e| e.to_string().contains("with_http_timeout")),
            "every request would time out"
        );
    }

    #[test]
    fn a_queue_too_big_to_allocate_is_an_error_or_the_default() {
        for size in [MAX_QUEUE_SIZE + 1, usize::MAX / 2, usize::MAX] {
            let e = Builder::new().with_queue_size(size).config().err();
            assert!(
                e.is_some_and(|e| e.to_string().contains("largest queue")),
                "{size}"
            );
        }
        let c = Builder::new()
            .with_queue_size(MAX_QUEUE_SIZE)
            .config()
            .expect("the largest queue is allowed");
        assert_eq!(c.queue_size, MAX_QUEUE_SIZE);
        let huge = (usize::MAX / 2).to_string();
        let c = config(&[("BRAINTRUST_QUEUE_SIZE", huge.as_str())])
            .expect("environment never fails the build");
        assert_eq!(c.queue_size, 25_000);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let b = Builder::new().with_api_key("sk-very-secret");
        assert!(!format!("{b:?}").contains("sk-very-secret"));
    }
}
