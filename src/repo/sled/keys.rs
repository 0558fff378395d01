//! Key encoding for the sled trees. Variable-length parts are separated by a
//! 0x00 byte, which neither server names, media ids, user ids nor datastore
//! ids can contain, so prefixes never collide and order is preserved.

use crate::{
    ids::{BlobKey, DatastoreId, MediaKey, Sha256Digest, UnixMillis},
    media::ports::ThumbSize,
};

const SEP: u8 = 0;

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(SEP);
        }
        out.extend_from_slice(part);
    }
    out
}

/// `media_by_id`: server ++ 0 ++ media id.
pub fn media(key: &MediaKey) -> Vec<u8> {
    join(&[key.server.as_bytes(), key.id.as_str().as_bytes()])
}

pub fn parse_media(bytes: &[u8]) -> Option<MediaKey> {
    let sep = bytes.iter().position(|&b| b == SEP)?;
    let server = std::str::from_utf8(&bytes[..sep]).ok()?;
    let id = std::str::from_utf8(&bytes[sep + 1..]).ok()?;
    MediaKey::parse(server, id).ok()
}

/// `pending_by_owner`: owner ++ 0 ++ media key.
pub fn pending(owner: &str, key: &MediaKey) -> Vec<u8> {
    join(&[owner.as_bytes(), &media(key)])
}

/// Prefix of every pending key of `owner`.
pub fn pending_prefix(owner: &str) -> Vec<u8> {
    let mut out = owner.as_bytes().to_vec();
    out.push(SEP);
    out
}

pub fn parse_pending(bytes: &[u8]) -> Option<MediaKey> {
    let sep = bytes.iter().position(|&b| b == SEP)?;
    parse_media(&bytes[sep + 1..])
}

/// `thumbs_by_media`: media key ++ 0 ++ width (BE) ++ height (BE) ++ method
/// ++ animated flag, so one media item's thumbnails share a prefix.
pub fn thumb(key: &MediaKey, size: &ThumbSize) -> Vec<u8> {
    let mut out = media(key);
    out.push(SEP);
    out.extend_from_slice(&size.width.to_be_bytes());
    out.extend_from_slice(&size.height.to_be_bytes());
    out.push(if size.crop { b'c' } else { b's' });
    out.push(u8::from(size.animated));
    out
}

/// The media key and size of a `thumbs_by_media` entry.
pub fn parse_thumb(bytes: &[u8]) -> Option<(MediaKey, ThumbSize)> {
    let split = bytes.len().checked_sub(11)?;
    let (media_key, suffix) = bytes.split_at(split);
    if suffix[0] != SEP {
        return None;
    }
    let size = ThumbSize {
        width: u32::from_be_bytes(suffix[1..5].try_into().ok()?),
        height: u32::from_be_bytes(suffix[5..9].try_into().ok()?),
        crop: suffix[9] == b'c',
        animated: suffix[10] == 1,
    };
    Some((parse_media(media_key)?, size))
}

/// Prefix of every thumbnail of `key` in `thumbs_by_media`.
pub fn thumb_prefix(key: &MediaKey) -> Vec<u8> {
    let mut out = media(key);
    out.push(SEP);
    out
}

/// Prefix of every `blobs_by_key` entry of `datastore`.
pub fn blob_key_prefix(datastore: &DatastoreId) -> Vec<u8> {
    let mut out = datastore.0.as_bytes().to_vec();
    out.push(SEP);
    out
}

/// `blobs_by_key`: datastore ++ 0 ++ blob key.
pub fn blob_key(datastore: &DatastoreId, key: &BlobKey) -> Vec<u8> {
    join(&[datastore.0.as_bytes(), key.as_str().as_bytes()])
}

/// `media_by_sha256`: digest ++ media key, so identical content shares a
/// 32-byte prefix.
pub fn by_sha256(digest: &Sha256Digest, key: &MediaKey) -> Vec<u8> {
    let mut out = digest.0.to_vec();
    out.extend_from_slice(&media(key));
    out
}

pub fn parse_by_sha256(bytes: &[u8]) -> Option<MediaKey> {
    parse_media(bytes.get(32..)?)
}

/// `media_by_uploader`: user ++ 0 ++ created (BE) ++ media key, so one
/// user's uploads share a prefix in creation order.
pub fn by_uploader(user: &str, created: UnixMillis, key: &MediaKey) -> Vec<u8> {
    let mut out = uploader_prefix(user);
    out.extend_from_slice(&created.0.to_be_bytes());
    out.extend_from_slice(&media(key));
    out
}

/// Prefix of every `media_by_uploader` entry of `user`.
pub fn uploader_prefix(user: &str) -> Vec<u8> {
    let mut out = user.as_bytes().to_vec();
    out.push(SEP);
    out
}

/// The user, creation time and media key of a `media_by_uploader` entry.
pub fn parse_by_uploader(bytes: &[u8]) -> Option<(&str, UnixMillis, MediaKey)> {
    let sep = bytes.iter().position(|&b| b == SEP)?;
    let user = std::str::from_utf8(&bytes[..sep]).ok()?;
    let created = bytes.get(sep + 1..sep + 9)?;
    let created = UnixMillis(u64::from_be_bytes(created.try_into().ok()?));
    Some((user, created, parse_media(bytes.get(sep + 9..)?)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Media keys round-trip through their byte encoding.
        #[test]
        fn media_keys_round_trip(server in "[a-z0-9.-]{1,30}(:[0-9]{1,4})?", id in "[A-Za-z0-9_-]{1,64}") {
            let key = MediaKey::parse(&server, &id).unwrap();
            prop_assert_eq!(parse_media(&media(&key)), Some(key.clone()));
            prop_assert_eq!(parse_pending(&pending("@u:x", &key)), Some(key.clone()));
            let size = ThumbSize { width: u32::try_from(id.len()).unwrap(), height: 7, crop: id.len() % 2 == 0, animated: id.len() % 3 == 0 };
            prop_assert_eq!(parse_thumb(&thumb(&key, &size)), Some((key.clone(), size)));
            prop_assert_eq!(parse_by_sha256(&by_sha256(&Sha256Digest([7; 32]), &key)), Some(key.clone()));
            let indexed = by_uploader("@u:x", UnixMillis((id.len() as u64) << 8), &key);
            prop_assert_eq!(parse_by_uploader(&indexed), Some(("@u:x", UnixMillis((id.len() as u64) << 8), key)));
        }

        /// One owner's prefix never matches another owner's keys.
        #[test]
        fn owner_prefixes_do_not_collide(a in "@[a-z]{1,8}:x", b in "@[a-z]{1,8}:x", id in "[A-Za-z]{4}") {
            let key = MediaKey::parse("x", &id).unwrap();
            let encoded = pending(&b, &key);
            prop_assert_eq!(encoded.starts_with(&pending_prefix(&a)), a == b);
        }
    }
}
