//! Many machines, one experiment: an eval's cases split into `n` shards by a stable hash of
//! each case's id, each shard run by its own process into the same experiment (by name,
//! with [`Eval::with_update`](crate::Eval::with_update)), and the whole experiment's
//! summary fetched once every shard is done ([`summarize_experiment`]).

use std::fmt;
use std::str::FromStr;

use futures_util::StreamExt;
use serde::Serialize;

use super::api::Api;
use super::summary::{EvalSummary, parse_summarize};
use super::{BoxFuture, DataContext, DataError, EvalCase, EvalData, EvalError, OpenedData};
use crate::Builder;

/// The environment variable [`Shard::from_env`] reads: `k/n`, this process runs shard `k`
/// (from 1) of `n`.
pub const EVAL_SHARD_ENV: &str = "BRAINTRUST_EVAL_SHARD";

/// One of `n` shares of an eval's cases: shard `k` (from 1 to `n`) takes the cases whose
/// key hashes to it. The key is the case's id, or its input as JSON when it has none; the
/// hash (FNV-1a, 64 bits) is the same on every machine and every run, so the shards
/// together run every case exactly once.
///
/// # Examples
///
/// ```
/// use tracing_braintrust::Shard;
///
/// let first: Shard = "1/2".parse()?;
/// let second = Shard::new(2, 2)?;
/// for id in ["q-1", "q-2", "q-3"] {
///     assert!(first.owns(id) != second.owns(id));
/// }
/// # Ok::<(), tracing_braintrust::DataError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    number: u32,
    count: u32,
}

impl Shard {
    /// Shard `number` (from 1) of `count`.
    ///
    /// # Errors
    ///
    /// When `count` is 0 or `number` is not between 1 and `count`.
    pub fn new(number: u32, count: u32) -> Result<Shard, DataError> {
        if count == 0 || number == 0 || number > count {
            return Err(DataError::new(format!(
                "invalid shard {number}/{count}: the shard number runs from 1 to the shard count"
            )));
        }
        Ok(Shard { number, count })
    }

    /// The shard named by `BRAINTRUST_EVAL_SHARD` (`k/n`), `None` when it is unset or empty.
    ///
    /// # Errors
    ///
    /// When the variable is set to anything but `k/n` with `1 <= k <= n`.
    pub fn from_env() -> Result<Option<Shard>, DataError> {
        match std::env::var(EVAL_SHARD_ENV) {
            Ok(value) if !value.trim().is_empty() => value.parse().map(Some),
            _ => Ok(None),
        }
    }

    /// This shard's number, from 1.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// How many shards there are.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether the case with this key (its id) belongs to this shard.
    pub fn owns(&self, key: &str) -> bool {
        fnv1a(key.as_bytes()) % u64::from(self.count) == u64::from(self.number - 1)
    }

    /// `data` restricted to this shard's cases.
    pub fn of<D>(self, data: D) -> Sharded<D> {
        Sharded { shard: self, data }
    }
}

impl FromStr for Shard {
    type Err = DataError;

    fn from_str(text: &str) -> Result<Shard, DataError> {
        let invalid = || {
            DataError::new(format!(
                "invalid shard {text:?}: expected k/n, shard k (from 1) of n"
            ))
        };
        let (number, count) = text.trim().split_once('/').ok_or_else(invalid)?;
        let number = number.trim().parse().map_err(|_| invalid())?;
        let count = count.trim().parse().map_err(|_| invalid())?;
        Shard::new(number, count)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.number, self.count)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The key a case is sharded by: its id, or its input as JSON.
fn case_key<I: Serialize, E>(case: &EvalCase<I, E>) -> String {
    match &case.id {
        Some(id) => id.clone(),
        None => super::to_json(&case.input).to_string(),
    }
}

/// An eval's data restricted to one [`Shard`] (made by [`Shard::of`]). The source is opened
/// and read whole by every shard (each keeps its own cases), so a dataset's id and version
/// reach every shard's experiment alike.
#[derive(Debug)]
pub struct Sharded<D> {
    shard: Shard,
    data: D,
}

impl<I, E, D> EvalData<I, E> for Sharded<D>
where
    D: EvalData<I, E>,
    I: Serialize + Send + 'static,
    E: Send + 'static,
{
    fn open(self, context: DataContext) -> BoxFuture<Result<OpenedData<I, E>, DataError>> {
        let shard = self.shard;
        let opened = self.data.open(context);
        Box::pin(async move {
            let mut opened = opened.await?;
            let cases = std::mem::replace(&mut opened.cases, futures_util::stream::empty().boxed());
            opened.cases = cases
                .filter(move |case| {
                    let keep = match case {
                        Ok(case) => shard.owns(&case_key(case)),
                        Err(_) => true,
                    };
                    std::future::ready(keep)
                })
                .boxed();
            opened.len = None;
            Ok(opened)
        })
    }
}

/// The summary of experiment `experiment_name` in the builder's project as it stands
/// (`GET /v1/experiment/{id}/summarize`): run it once every shard is done to see the whole
/// experiment. Nothing is printed; the summary's `Display` is the Python SDK's block.
///
/// # Errors
///
/// [`EvalError::Config`] without an API key, [`EvalError::Layer`] for invalid settings,
/// [`EvalError::Experiment`] when the experiment does not exist or a request fails.
pub async fn summarize_experiment(
    builder: Builder,
    experiment_name: &str,
) -> Result<EvalSummary, EvalError> {
    let config = builder.config().map_err(EvalError::Layer)?;
    if config.api_key.is_none() {
        return Err(EvalError::Config(
            "summarize_experiment reads the experiment from Braintrust: set BRAINTRUST_API_KEY"
                .into(),
        ));
    }
    let (_, _, http) = config.upload_sink().map_err(EvalError::Layer)?;
    let api = Api::new(http);
    let failed = |e: super::api::RestError| EvalError::Experiment(e.message);
    let project_id = api.project_id(&config.project_name).await.map_err(failed)?;
    let id = api
        .experiment_id_by_name(experiment_name, &project_id)
        .await
        .map_err(failed)?
        .ok_or_else(|| {
            EvalError::Experiment(format!(
                "no experiment {experiment_name:?} in project {:?}",
                config.project_name
            ))
        })?;
    let answer = api.summarize(&id, None).await.map_err(failed)?;
    let mut summary = EvalSummary {
        project_name: config.project_name.clone(),
        experiment_name: experiment_name.to_owned(),
        experiment_id: Some(id),
        ..EvalSummary::default()
    };
    parse_summarize(&answer, &mut summary);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    #[test]
    fn shards_split_every_key_exactly_once() {
        let shards: Vec<Shard> = (1..=3).map(|k| Shard::new(k, 3).expect("valid")).collect();
        let mut sizes = [0usize; 3];
        for n in 0..3000 {
            let key = format!("case-{n}");
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].owns(&key)).collect();
            assert_eq!(owners.len(), 1, "{key}");
            sizes[owners[0]] += 1;
        }
        // A fair split: each shard has about a third.
        assert!(sizes.iter().all(|&s| (800..1200).contains(&s)), "{sizes:?}");
        // Stable across runs and machines (the hash is fixed, not seeded).
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn shard_names_are_checked() {
        assert_eq!(
            "2/3".parse::<Shard>().map(|s| s.to_string()),
            Ok("2/3".into())
        );
        for bad in ["0/3", "4/3", "1/0", "1", "a/b", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_sharded_source_keeps_its_own_cases_and_passes_errors_on() {
        let items = vec![
            Ok(EvalCase::<u32, u32>::new(1).with_id("a")),
            Ok(EvalCase::new(2)),
            Err(DataError::new("page failed")),
        ];
        let context = || DataContext {
            api: None,
            project_name: "p".into(),
        };
        let mut seen = Vec::new();
        for k in 1..=2 {
            let shard = Shard::new(k, 2).expect("valid");
            let source = crate::eval::DataStream::new(stream::iter(items.clone()));
            let mut opened = shard.of(source).open(context()).await.expect("opens");
            while let Some(case) = opened.cases.next().await {
                seen.push(case.map(|c| c.input));
            }
        }
        seen.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(
            seen,
            [
                Err(DataError::new("page failed")),
                Err(DataError::new("page failed")),
                Ok(1),
                Ok(2)
            ]
        );
    }
}
