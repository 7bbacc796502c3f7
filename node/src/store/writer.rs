//! [`ObjectWriter`]: one object stored while its bytes are still arriving.

use std::time::Duration;

use aws_sdk_s3::types::CompletedPart;
use bytes::Bytes;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::body::ObjectBody;
use super::s3::PendingUpload;
use super::settings::MAX_PARTS;
use super::{S3Store, StoreError};

/// How long an abandoned upload's parts in flight may take to end before they are cut off.
const PART_GRACE: Duration = Duration::from_secs(5);

/// Writes one object as its bytes arrive, so that storing overlaps receiving
/// and memory stays bounded by the parts in flight rather than the object.
///
/// Bytes are gathered into parts of the configured size. While the object is
/// no larger than the multipart threshold nothing is sent, and
/// [`finish`](Self::finish) stores it with one PUT. Past it (or from the first
/// part on, when the size hint says the object will be past it), a multipart
/// upload is started and every full part is sent at once, at most
/// `multipart_concurrency` at a time ([`write`](Self::write) waits for a slot,
/// which pushes back on whoever produces the bytes). Nothing is visible under
/// the key before `finish` completes the upload.
///
/// On any error the upload is aborted before the error is returned, as it is by
/// [`abort`](Self::abort), after the parts in flight have ended (or a few
/// seconds, if they hang); a writer dropped unfinished does the same in the
/// background (and a bucket lifecycle
/// rule `AbortIncompleteMultipartUpload` catches what a crash leaves behind).
#[derive(Debug)]
pub struct ObjectWriter {
    store: S3Store,
    key: String,
    full: String,
    part_size: usize,
    threshold: usize,
    multipart_early: bool,
    buffered: ObjectBody,
    written: u64,
    upload: Option<Multipart>,
    failed: bool,
    span: tracing::Span,
}

/// A started multipart upload and its parts.
#[derive(Debug)]
struct Multipart {
    pending: PendingUpload,
    next_part: i32,
    in_flight: JoinSet<Result<CompletedPart, StoreError>>,
    done: Vec<CompletedPart>,
}

impl ObjectWriter {
    /// A writer for `key` (already validated); see [`S3Store::writer`].
    pub(super) fn new(store: S3Store, key: &str, size_hint: Option<u64>) -> Self {
        let (part_size, threshold) = store.multipart_sizes();
        // A part size that keeps the hinted size within S3's part count.
        let part_size = size_hint.map_or(part_size, |n| part_size.max(n.div_ceil(MAX_PARTS)));
        let clamp = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let full = store.full_key(key);
        ObjectWriter {
            span: tracing::debug_span!("s3_object_writer", key, size_hint, part_size),
            store,
            key: key.to_owned(),
            full,
            part_size: clamp(part_size),
            threshold: clamp(threshold),
            multipart_early: size_hint.is_some_and(|n| n > threshold),
            buffered: ObjectBody::default(),
            written: 0,
            upload: None,
            failed: false,
        }
    }

    /// Bytes handed to the writer so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `bytes` to the object, sending every part that is full.
    pub async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        self.check_usable()?;
        self.written += bytes.len() as u64;
        self.buffered.push(bytes);
        let span = self.span.clone();
        let result = self.send_full_parts().instrument(span).await;
        self.abort_on_error(result).await
    }

    /// Stores what is left and makes the object visible; returns its size.
    pub async fn finish(mut self) -> Result<u64, StoreError> {
        self.check_usable()?;
        let span = self.span.clone();
        let result = self.complete().instrument(span).await;
        self.abort_on_error(result).await?;
        Ok(self.written)
    }

    /// Gives the object up: stops the parts in flight and aborts the upload.
    pub async fn abort(mut self) {
        self.abort_upload().await;
    }

    /// After an error the object was given up: it can no longer be written or finished.
    fn check_usable(&self) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::Rejected {
                op: "object_writer",
                key: self.key.clone(),
                status: None,
                message: "an earlier write failed and the object was given up".to_owned(),
            });
        }
        Ok(())
    }

    async fn send_full_parts(&mut self) -> Result<(), StoreError> {
        let over_threshold = self.buffered.len() > self.threshold;
        let part_ready = self.buffered.len() >= self.part_size;
        if self.upload.is_none() && (over_threshold || (self.multipart_early && part_ready)) {
            // Started in a task of its own, so that the upload gets its abort
            // guard even if this future is dropped while S3 is creating it:
            // the guard is then dropped with the task's unclaimed output.
            let (store, key, full) = (self.store.clone(), self.key.clone(), self.full.clone());
            let started = tokio::spawn(
                async move {
                    let upload_id = store.create_upload(&key, &full).await?;
                    Ok::<_, StoreError>(store.pending_upload(&key, &full, upload_id))
                }
                .instrument(self.span.clone()),
            );
            let pending = started.await.map_err(|e| StoreError::Unavailable {
                op: "create_multipart_upload",
                key: self.key.clone(),
                status: None,
                message: format!("the task starting the upload ended abnormally: {e}"),
            })??;
            self.upload = Some(Multipart {
                pending,
                next_part: 1,
                in_flight: JoinSet::new(),
                done: Vec::new(),
            });
        }
        if self.upload.is_none() {
            return Ok(());
        }
        while self.buffered.len() >= self.part_size {
            let part = self.buffered.split_to(self.part_size);
            self.send_part(part).await?;
        }
        Ok(())
    }

    /// Sends one part in the background once fewer than the allowed number are in flight.
    async fn send_part(&mut self, part: ObjectBody) -> Result<(), StoreError> {
        let concurrency = self.store.multipart_concurrency();
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        while upload.in_flight.len() >= concurrency {
            upload.join_one().await?;
        }
        let number = upload.next_part;
        if i64::from(number) > MAX_PARTS as i64 {
            return Err(StoreError::Rejected {
                op: "upload_part",
                key: self.key.clone(),
                status: None,
                message: format!(
                    "the object needs more than {MAX_PARTS} parts of {} bytes",
                    self.part_size
                ),
            });
        }
        upload.next_part += 1;
        let (store, key, full) = (self.store.clone(), self.key.clone(), self.full.clone());
        let upload_id = upload.pending.upload_id().to_owned();
        upload.in_flight.spawn(
            async move {
                store
                    .upload_part(&key, &full, &upload_id, number, part)
                    .await
            }
            .instrument(self.span.clone()),
        );
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), StoreError> {
        let rest = std::mem::take(&mut self.buffered);
        if self.upload.is_none() {
            return self.store.put_single(&self.key, &self.full, rest).await;
        }
        if !rest.is_empty() {
            self.send_part(rest).await?;
        }
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        while !upload.in_flight.is_empty() {
            upload.join_one().await?;
        }
        let mut parts = std::mem::take(&mut upload.done);
        parts.sort_by_key(|p| p.part_number());
        let upload_id = upload.pending.upload_id().to_owned();
        self.store
            .complete_upload(&self.key, &self.full, &upload_id, parts)
            .await?;
        if let Some(upload) = self.upload.take() {
            upload.pending.disarm();
        }
        Ok(())
    }

    async fn abort_on_error<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            self.abort_upload().await;
        }
        result
    }

    async fn abort_upload(&mut self) {
        self.failed = true;
        self.buffered = ObjectBody::default();
        if let Some(upload) = self.upload.take() {
            upload.wind_down().await;
        }
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        let Some(upload) = self.upload.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(upload.wind_down().instrument(self.span.clone()));
            }
            // The parts stop with the join set; the upload's guard logs what is left.
            Err(_) => drop(upload),
        }
    }
}

impl Multipart {
    /// Lets the parts in flight end (for at most [`PART_GRACE`], then stops
    /// them), then aborts the upload: no part lands after the abort, and no S3
    /// server is left with a part cut off half-way unless it is stuck.
    async fn wind_down(mut self) {
        let drain = async { while self.in_flight.join_next().await.is_some() {} };
        if tokio::time::timeout(PART_GRACE, drain).await.is_err() {
            self.in_flight.shutdown().await;
        }
        self.pending.abort().await;
    }

    /// Waits for one part in flight to end.
    async fn join_one(&mut self) -> Result<(), StoreError> {
        match self.in_flight.join_next().await {
            Some(Ok(Ok(part))) => {
                self.done.push(part);
                Ok(())
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => Err(StoreError::Unavailable {
                op: "upload_part",
                key: self.pending.key().to_owned(),
                status: None,
                message: format!("part upload task ended abnormally: {e}"),
            }),
            None => Ok(()),
        }
    }
}
