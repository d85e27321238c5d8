//! Splits: a seeded generator, train / val / test parts (random, stratified, or as a file
//! records them) and the balance check.

use super::*;

/// SplitMix64, the small generator behind [`split`]: written here so that a seed gives the same
/// numbers on every platform and with every dependency version. (`scripts/make_probes.py` has
/// the same generator.)
///
/// ```
/// use puppetlens::data::SplitMix64;
/// let mut rng = SplitMix64::new(0);
/// assert_eq!(rng.next_u64(), 0xe220a8397b1dcdaf);
/// let mut v = [1, 2, 3, 4];
/// SplitMix64::new(1).shuffle(&mut v);
/// let mut sorted = v;
/// sorted.sort();
/// assert_eq!(sorted, [1, 2, 3, 4]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    pub(super) state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0; 0 gives 0): the high 64 bits of `next_u64() * bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }

    /// Shuffles `items` in place (Fisher–Yates, from the last element down).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// One part of a [`Split`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitPart {
    /// The training part (`"train"`).
    Train,
    /// The validation part (`"val"`).
    Val,
    /// The test part (`"test"`).
    Test,
}

impl fmt::Display for SplitPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SplitPart::Train => "train",
            SplitPart::Val => "val",
            SplitPart::Test => "test",
        })
    }
}

impl FromStr for SplitPart {
    type Err = Error;

    /// Parses `train`, `val` (or `validation`) and `test`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "train" => Ok(SplitPart::Train),
            "val" | "validation" => Ok(SplitPart::Val),
            "test" => Ok(SplitPart::Test),
            other => Err(Error::InvalidArgument {
                name: "split".into(),
                msg: format!("{other:?} is not a split part (expected train, val or test)"),
            }),
        }
    }
}

/// A dataset split into training, validation and test parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split<T> {
    /// The training part.
    pub train: Vec<T>,
    /// The validation part.
    pub val: Vec<T>,
    /// The test part.
    pub test: Vec<T>,
}

impl<T> Split<T> {
    /// One part.
    pub fn part(&self, part: SplitPart) -> &[T] {
        match part {
            SplitPart::Train => &self.train,
            SplitPart::Val => &self.val,
            SplitPart::Test => &self.test,
        }
    }

    /// The number of items in all parts.
    pub fn len(&self) -> usize {
        self.train.len() + self.val.len() + self.test.len()
    }

    /// Whether all parts are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies `f` to every item, keeping the parts.
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> Split<U> {
        Split {
            train: self.train.into_iter().map(&mut f).collect(),
            val: self.val.into_iter().map(&mut f).collect(),
            test: self.test.into_iter().map(&mut f).collect(),
        }
    }

    /// Puts each item in the part its tag names (items and tags in the same order, e.g. from a
    /// loader and [`load_split_tags`] on the same file); each part keeps the items' order.
    pub fn from_tags(items: Vec<T>, tags: &[SplitPart]) -> Result<Split<T>> {
        if items.len() != tags.len() {
            return Err(Error::InvalidArgument {
                name: "tags".into(),
                msg: format!("{} tags for {} items", tags.len(), items.len()),
            });
        }
        let mut out = Split {
            train: Vec::new(),
            val: Vec::new(),
            test: Vec::new(),
        };
        for (item, tag) in items.into_iter().zip(tags) {
            match tag {
                SplitPart::Train => out.train.push(item),
                SplitPart::Val => out.val.push(item),
                SplitPart::Test => out.test.push(item),
            }
        }
        Ok(out)
    }
}

/// How many of `n` items go to train and validation: `floor(n * f + 0.5)` each (the validation
/// count capped so that both fit), the rest to test.
pub(super) fn part_sizes(n: usize, fractions: (f64, f64, f64)) -> (usize, usize) {
    let count = |f: f64| ((n as f64) * f + 0.5).floor() as usize;
    let n_train = count(fractions.0).min(n);
    let n_val = count(fractions.1).min(n - n_train);
    (n_train, n_val)
}

pub(super) fn check_fractions(fractions: (f64, f64, f64)) -> Result<()> {
    let (a, b, c) = fractions;
    let bad = [a, b, c].iter().any(|f| !f.is_finite() || *f < 0.0);
    if bad || ((a + b + c) - 1.0).abs() > 1e-9 {
        return Err(Error::InvalidArgument {
            name: "fractions".into(),
            msg: format!(
                "({a}, {b}, {c}) must be non-negative and sum to 1 (they sum to {})",
                a + b + c
            ),
        });
    }
    Ok(())
}

/// The indices of `n` items, split by a seeded shuffle.
pub(super) fn split_indices(n: usize, fractions: (f64, f64, f64), seed: u64) -> Split<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::new(seed).shuffle(&mut order);
    let (n_train, n_val) = part_sizes(n, fractions);
    let test = order.split_off(n_train + n_val);
    let val = order.split_off(n_train);
    Split {
        train: order,
        val,
        test,
    }
}

/// Splits `items` into train/validation/test parts of the given fractions, by a deterministic
/// seeded shuffle: the items are shuffled with [`SplitMix64::shuffle`] seeded with `seed`, the
/// first `floor(n * fractions.0 + 0.5)` go to train, the next `floor(n * fractions.1 + 0.5)` to
/// validation and the rest to test, each part in shuffled order.
///
/// The fractions must be non-negative and sum to 1 ([`Error::InvalidArgument`] otherwise).
pub fn split<T: Clone>(items: &[T], fractions: (f64, f64, f64), seed: u64) -> Result<Split<T>> {
    check_fractions(fractions)?;
    Ok(split_indices(items.len(), fractions, seed).map(|i| items[i].clone()))
}

/// [`split`] done on each class on its own (classes in `class`'s order, each class's items in
/// their original order, all with the same seed), so that every part keeps the class balance of
/// the whole. Each part lists the first class's items, then the second's, and so on.
pub fn split_stratified<T: Clone, K: Ord>(
    items: &[T],
    fractions: (f64, f64, f64),
    seed: u64,
    class: impl Fn(&T) -> K,
) -> Result<Split<T>> {
    check_fractions(fractions)?;
    let mut groups: BTreeMap<K, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        groups.entry(class(item)).or_default().push(i);
    }
    let mut out = Split {
        train: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
    };
    for members in groups.values() {
        let parts = split_indices(members.len(), fractions, seed);
        let take = |ix: &[usize]| {
            ix.iter()
                .map(|&k| items[members[k]].clone())
                .collect::<Vec<_>>()
        };
        out.train.extend(take(&parts.train));
        out.val.extend(take(&parts.val));
        out.test.extend(take(&parts.test));
    }
    Ok(out)
}

/// Reads the `split` field (JSON, JSONL) or column (CSV, for a `.csv` file) of every record of a
/// file, in the order the loaders return the records. A record without a valid `split` (`train`,
/// `val`, `test`) is an [`Error::Config`] naming the record.
pub fn load_split_tags(path: impl AsRef<Path>) -> Result<Vec<SplitPart>> {
    let path = path.as_ref();
    let is_csv = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let parse = |field: String, raw: &str| {
        raw.parse::<SplitPart>().map_err(|_| {
            config_err(
                path,
                field,
                format!("{raw:?} is not a split part (expected train, val or test)"),
            )
        })
    };
    if is_csv {
        let (header, records) = read_csv(path)?;
        let col = header.iter().position(|h| h == "split").ok_or_else(|| {
            config_err(
                path,
                "line 1: header",
                format!("no `split` column in `{}`", header.join(",")),
            )
        })?;
        records
            .iter()
            .map(|(line, fields)| parse(format!("line {line}: split"), &fields[col]))
            .collect()
    } else {
        let text = read_text(path)?;
        if instruction_layout(path, &text) == InstructionLayout::Text {
            return Err(config_err(
                path,
                "(whole file)",
                "a plain text file records no split",
            ));
        }
        let mut out = Vec::new();
        for (loc, v) in read_json_records(path, &text)? {
            let obj = as_object(path, loc, &v, "a `split` field")?;
            let raw = str_field(path, loc, obj, "split")?;
            out.push(parse(loc.field("split"), &raw)?);
        }
        Ok(out)
    }
}

/// Loads a file with `load` and splits its records as the file's `split` field records (see
/// [`load_split_tags`]).
///
/// ```no_run
/// use puppetlens::data;
/// let parts = data::load_with_split("probes/true_false.csv", data::load_labeled_csv)?;
/// println!("{} training statements", parts.train.len());
/// # Ok::<(), puppetlens::Error>(())
/// ```
pub fn load_with_split<T, P: AsRef<Path> + Clone>(
    path: P,
    load: impl FnOnce(P) -> Result<Vec<T>>,
) -> Result<Split<T>> {
    let items = load(path.clone())?;
    let path = path.as_ref();
    let tags = load_split_tags(path)?;
    if items.len() != tags.len() {
        return Err(config_err(
            path,
            "split",
            format!("{} split tags for {} records", tags.len(), items.len()),
        ));
    }
    Split::from_tags(items, &tags)
}

/// Fails with [`Error::InvalidArgument`] (named `what`) when `labels` is empty or when either
/// class holds less than `min_fraction` of the labels (`min_fraction` in `0.0..=0.5`).
///
/// ```
/// use puppetlens::data::check_balanced;
/// assert!(check_balanced(&[true, false, true, false], 0.25, "labels").is_ok());
/// let err = check_balanced(&[true, true, true, false], 0.3, "labels").unwrap_err();
/// assert!(err.to_string().contains("unbalanced"));
/// ```
pub fn check_balanced(labels: &[bool], min_fraction: f64, what: &str) -> Result<()> {
    if !(0.0..=0.5).contains(&min_fraction) {
        return Err(Error::InvalidArgument {
            name: "min_fraction".into(),
            msg: format!("{min_fraction} is outside 0..=0.5"),
        });
    }
    let n = labels.len();
    if n == 0 {
        return Err(Error::InvalidArgument {
            name: what.into(),
            msg: "no labels: the set is empty".into(),
        });
    }
    let n_true = labels.iter().filter(|&&l| l).count();
    let n_false = n - n_true;
    let minority = n_true.min(n_false) as f64 / n as f64;
    if minority < min_fraction {
        return Err(Error::InvalidArgument {
            name: what.into(),
            msg: format!(
                "unbalanced labels: {n_true} true and {n_false} false out of {n} \
                 ({:.1}% true); each class needs at least {:.1}%",
                100.0 * n_true as f64 / n as f64,
                100.0 * min_fraction
            ),
        });
    }
    Ok(())
}
