//! How a batch of usage records is packed into one `batches.records` blob.
//!
//! Format 2 (written): a 0 byte, then postcard of [`Packed`]: the batch's
//! earliest time, each record as varints with its time relative to that
//! earliest one and its models as numbers into the batch's list, then that
//! list of its distinct model names (about 20 bytes a record). Format 1 (read only, the
//! first packed layout): postcard of a `Vec` of [`Stored`], which never
//! starts with a 0 byte since an empty batch was never written.
//!
//! Failure behaviour: [`decode`] gives `None` for a blob in neither format
//! or whose model numbers point outside its list; nothing panics.

use serde::{Deserialize, Serialize};
use std::cell::RefCell;

/// A record as queries see it (`M` = `String`), as it is packed from
/// (`&str`: the queue's text), and as format 2 holds it (`u32`: a number
/// into the batch's model list, `ts_ms` relative to the batch's earliest).
/// Names are `names` ids; durations are microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stored<M = String> {
    pub ts_ms: u64,
    pub client: u32,
    pub model: M,
    pub served_model: Option<M>,
    pub upstream: u32,
    pub key: u32,
    pub route: u32,
    pub status: u16,
    pub attempts: u32,
    pub latency_us: u64,
    pub ttft_us: Option<u64>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub estimated: bool,
    pub error: u32,
    /// Picodollars: kept in its own column (`batches.costs`), not in the
    /// packed records, so both formats stay as they were.
    #[serde(skip)]
    pub cost: u64,
}

/// A record to pack: its model names borrowed.
pub type Borrowed<'a> = Stored<&'a str>;

/// One record of format 2.
type Compact = Stored<u32>;

impl<M> Stored<M> {
    /// The same record with its models (and time) given by `f` (and `ts_ms`).
    fn with_models<'s, N>(&'s self, ts_ms: u64, mut f: impl FnMut(&'s M) -> N) -> Stored<N> {
        Stored {
            ts_ms,
            client: self.client,
            model: f(&self.model),
            served_model: self.served_model.as_ref().map(&mut f),
            upstream: self.upstream,
            key: self.key,
            route: self.route,
            status: self.status,
            attempts: self.attempts,
            latency_us: self.latency_us,
            ttft_us: self.ttft_us,
            tokens_in: self.tokens_in,
            tokens_out: self.tokens_out,
            estimated: self.estimated,
            error: self.error,
            cost: self.cost,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Packed<'a> {
    base_ms: u64,
    records: Vec<Compact>,
    #[serde(borrow)]
    models: Vec<&'a str>,
}

impl<'a> From<&'a Stored> for Borrowed<'a> {
    fn from(s: &'a Stored) -> Self {
        s.with_models(s.ts_ms, |m| m.as_str())
    }
}

/// The model names of a batch being packed, numbered as first seen.
#[derive(Default)]
struct Numbers<'a> {
    by_name: foldhash::HashMap<&'a str, u32>,
    list: Vec<&'a str>,
}

impl<'a> Numbers<'a> {
    fn of(&mut self, m: &'a str) -> u32 {
        *self.by_name.entry(m).or_insert_with(|| {
            self.list.push(m);
            self.list.len() as u32 - 1
        })
    }
}

/// The records of a [`Packed`] being written, made as they are serialized
/// (no vector of them), numbering model names on the way.
struct Records<'n, 'a, I> {
    it: RefCell<Option<I>>,
    base_ms: u64,
    numbers: &'n RefCell<Numbers<'a>>,
}

impl<'a, I: ExactSizeIterator<Item = Borrowed<'a>>> Serialize for Records<'_, 'a, I> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let it = self.it.borrow_mut().take();
        let it = it.ok_or_else(|| serde::ser::Error::custom("records serialized twice"))?;
        s.collect_seq(it.map(|r| {
            let mut n = self.numbers.borrow_mut();
            r.with_models(r.ts_ms.saturating_sub(self.base_ms), |m| n.of(m))
        }))
    }
}

/// The model list of a [`Packed`] being written: serialized after the
/// records, so it is complete.
struct Models<'n, 'a>(&'n RefCell<Numbers<'a>>);

impl Serialize for Models<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.borrow().list.serialize(s)
    }
}

/// Appends `records` packed in format 2 to `out` (a reused buffer: packing
/// a batch allocates only the small table of its model names). `base_ms`
/// is at or before every record's time.
pub fn encode_into<'a>(
    out: &mut Vec<u8>,
    base_ms: u64,
    records: impl ExactSizeIterator<Item = Borrowed<'a>>,
) -> Result<(), postcard::Error> {
    #[derive(Serialize)]
    #[serde(bound(serialize = "I: ExactSizeIterator<Item = Borrowed<'a>>"))]
    struct Out<'n, 'a, I> {
        base_ms: u64,
        records: Records<'n, 'a, I>,
        models: Models<'n, 'a>,
    }
    let numbers = RefCell::new(Numbers::default());
    let packed = Out {
        base_ms,
        records: Records {
            it: RefCell::new(Some(records)),
            base_ms,
            numbers: &numbers,
        },
        models: Models(&numbers),
    };
    out.push(0);
    *out = postcard::to_extend(&packed, std::mem::take(out))?;
    Ok(())
}

/// `records` packed in format 2.
#[cfg(test)]
pub fn encode(records: &[Stored]) -> Result<Vec<u8>, postcard::Error> {
    let base_ms = records.iter().map(|r| r.ts_ms).min().unwrap_or(0);
    let mut out = Vec::new();
    encode_into(&mut out, base_ms, records.iter().map(Borrowed::from))?;
    Ok(out)
}

/// The records of a blob in either format (`None`: it does not decode).
pub fn decode(blob: &[u8]) -> Option<Vec<Stored>> {
    let Some((&0, rest)) = blob.split_first() else {
        return postcard::from_bytes::<Vec<Stored>>(blob).ok();
    };
    let p: Packed<'_> = postcard::from_bytes(rest).ok()?;
    let model = |i: &u32| p.models.get(*i as usize).map(|m| m.to_string());
    p.records
        .iter()
        .map(|c| {
            let ts_ms = p.base_ms.checked_add(c.ts_ms)?;
            let served = match &c.served_model {
                Some(i) => Some(model(i)?),
                None => None,
            };
            let mut r = c.with_models(ts_ms, |_| String::new());
            r.model = model(&c.model)?;
            r.served_model = served;
            Some(r)
        })
        .collect()
}

/// A record's request id as `batches.ids` keeps it: the gateway's own as
/// its counter (the batch holds the process tag), an upstream's as text.
#[derive(Serialize, Deserialize)]
enum PackedId<'a> {
    None,
    Own(u64),
    Other(&'a str),
}

/// Packs a batch's request ids (in record order; `""`: none) for the
/// `ids` column: about 4 bytes an id of the gateway's own, not 23.
pub fn encode_ids<'a>(ids: impl Iterator<Item = &'a str>) -> Result<Vec<u8>, postcard::Error> {
    use crate::forward::headers::own_request_id;
    let mut tag = None;
    let packed: Vec<PackedId<'_>> = ids
        .map(|id| match own_request_id(id) {
            _ if id.is_empty() => PackedId::None,
            Some((t, n)) if *tag.get_or_insert(t) == t => PackedId::Own(n),
            _ => PackedId::Other(id),
        })
        .collect();
    postcard::to_allocvec(&(tag.unwrap_or(0), packed))
}

/// The request ids [`encode_ids`] packed (`None`: the blob does not decode).
pub fn decode_ids(blob: &[u8]) -> Option<Vec<Option<String>>> {
    use crate::forward::headers::format_request_id;
    let (tag, packed): (u32, Vec<PackedId<'_>>) = postcard::from_bytes(blob).ok()?;
    Some(
        packed
            .into_iter()
            .map(|p| match p {
                PackedId::None => None,
                PackedId::Own(n) => Some(format_request_id(tag, n)),
                PackedId::Other(s) => Some(s.to_string()),
            })
            .collect(),
    )
}

/// A batch's costs (in record order) for the `costs` column.
pub fn encode_costs(costs: impl Iterator<Item = u64>) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(&costs.collect::<Vec<u64>>())
}

/// What [`encode_costs`] wrote (`None`: it does not decode).
pub fn decode_costs(blob: &[u8]) -> Option<Vec<u64>> {
    postcard::from_bytes(blob).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_pack_small_and_come_back_whole() {
        let own: Vec<String> = (0..3)
            .map(|_| {
                crate::forward::headers::new_request_id()
                    .to_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let ids = [
            own[0].as_str(),
            "",
            "req_upstream_1",
            own[1].as_str(),
            own[2].as_str(),
        ];
        let blob = encode_ids(ids.iter().copied()).unwrap();
        assert!(blob.len() < 40, "{} bytes", blob.len());
        let back = decode_ids(&blob).unwrap();
        let want: Vec<Option<String>> = ids
            .iter()
            .map(|i| (!i.is_empty()).then(|| i.to_string()))
            .collect();
        assert_eq!(back, want);
        assert!(decode_ids(&[0xff, 0xff]).is_none());
    }

    fn stored(ts_ms: u64, model: &str, served: Option<&str>) -> Stored {
        Stored {
            ts_ms,
            client: 3,
            model: model.into(),
            served_model: served.map(Into::into),
            upstream: 4,
            key: 5,
            route: 6,
            status: 429,
            attempts: 2,
            latency_us: 123_456,
            ttft_us: Some(7_890),
            tokens_in: 11,
            tokens_out: 22,
            estimated: true,
            error: 7,
            cost: 0,
        }
    }

    #[test]
    fn both_formats_decode_to_the_same_records() {
        let recs = vec![
            stored(1_700_000_000_123, "gpt-4o", None),
            stored(1_700_000_000_100, "gpt-4o", Some("gpt-4o-2024-08-06")),
            stored(1_700_000_000_200, "o3", Some("gpt-4o")),
        ];
        let v2 = encode(&recs).unwrap();
        assert_eq!(decode(&v2).unwrap(), recs);
        let v1 = postcard::to_allocvec(&recs).unwrap();
        assert_eq!(decode(&v1).unwrap(), recs);
        // the point of format 2: names once, times small
        assert!(v2.len() < v1.len(), "{} vs {}", v2.len(), v1.len());
    }

    #[test]
    fn hostile_blobs_do_not_decode() {
        assert!(decode(&[]).is_none());
        assert!(decode(&[0xff, 0xff, 0xff]).is_none());
        assert!(decode(&[0]).is_none());
        let compact: Compact = stored(5, "m", None).with_models(5, |_| 0);
        let blob = |base_ms, records| {
            let p = Packed {
                base_ms,
                records,
                models: vec!["m"],
            };
            let mut b = vec![0];
            b.extend(postcard::to_allocvec(&p).unwrap());
            b
        };
        assert_eq!(decode(&blob(7, vec![compact])).unwrap()[0].ts_ms, 12);
        // a model number outside the batch's list
        let outside = Compact {
            model: 9,
            ..compact
        };
        assert!(decode(&blob(7, vec![outside])).is_none());
        let served_outside = Compact {
            served_model: Some(1),
            ..compact
        };
        assert!(decode(&blob(7, vec![served_outside])).is_none());
        // times that overflow
        assert!(decode(&blob(u64::MAX, vec![compact])).is_none());
    }
}
