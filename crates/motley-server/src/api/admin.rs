//! Admin routes: tokens, joining, the audit log, secrets (reveal, key rotation),
//! snapshots.

use super::*;

/// `GET /v1/audit`: the latest denied requests, oldest first.
pub(crate) async fn list_audit(
    State(s): State<Arc<Shared>>,
) -> Json<Vec<motley_core::api::AuditEntry>> {
    Json(s.trust.audit.recent())
}

pub(crate) fn token_info(t: &crate::auth::TokenRecord) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        role: t.role.name().into(),
        node: match &t.role {
            Role::Node { node } => Some(node.clone()),
            _ => None,
        },
        created_at: t.created_at,
        expires_at: t.expires_at,
        description: t.description.clone(),
        namespaces: t.namespaces.clone(),
    }
}

/// `GET /v1/secrets/{name}/reveal` (admin): a secret's values in plaintext. Recorded in
/// the audit log like a refusal, so every reveal is on file.
pub(crate) async fn reveal_secret(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<super::workloads::NsQuery>,
    req: Request,
) -> ApiResult<Json<motley_core::api::RevealedSecret>> {
    let r = WorkloadRef::in_namespace(q.ns(), Kind::Secret, name.clone());
    let sealed_to = r.scoped_name();
    let spec = match s.cache().workloads.get(&r).map(|w| w.spec.clone()) {
        Some(Spec::Secret(spec)) => spec,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{r} not found"),
            ));
        }
    };
    let mut data = BTreeMap::new();
    {
        let ring = crate::state::read(&s.trust.keyring);
        for (k, v) in &spec.data {
            let sealed = v.sealed.as_deref().unwrap_or_default();
            let plain = ring.open(&sealed_to, k, sealed).map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("key {k}: {e}"))
            })?;
            data.insert(k.clone(), String::from_utf8_lossy(&plain).into_owned());
        }
    }
    let who = req
        .extensions()
        .get::<Who>()
        .map_or_else(|| "-".to_string(), |w| w.0.clone());
    audit(
        &s,
        &req,
        &who,
        StatusCode::OK,
        &format!("secret {} revealed", r.scoped_name()),
    );
    Ok(Json(motley_core::api::RevealedSecret { name, data }))
}

/// `POST /v1/secrets/rotate-key` (admin): a new key; every stored value sealed again
/// with it; then the old key is forgotten.
pub(crate) async fn rotate_key(
    State(s): State<Arc<Shared>>,
) -> ApiResult<Json<motley_core::api::KeyRotated>> {
    let _one_at_a_time = s.trust.rotating.lock().await;
    let internal = |e: crate::secrets::SecretError| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    };
    let key_id = crate::state::write(&s.trust.keyring)
        .begin_rotation()
        .map_err(internal)?;
    let prefix = format!("{}secret/", keys::WORKLOADS);
    let (st, prefix_ref, internal_ref) = (&*s, &prefix, &internal);
    let outcome = motley_store::update(
        &*s.store,
        || async move {
            let (s, prefix, internal) = (st, prefix_ref, internal_ref);
            let range = s.store.range(prefix).await?;
            let mut txn = Txn::new();
            let mut count = 0;
            let ring = crate::state::read(&s.trust.keyring);
            for kv in &range.kvs {
                let Ok(mut w) = serde_json::from_slice::<Workload>(&kv.value) else {
                    continue;
                };
                let sealed_to = w.spec.reference().scoped_name();
                let Spec::Secret(sec) = &mut w.spec else {
                    continue;
                };
                let mut changed = false;
                for (k, v) in sec.data.iter_mut() {
                    let Some(old) = v.sealed.as_deref() else {
                        continue;
                    };
                    if ring.is_current(old) {
                        continue;
                    }
                    let plain = ring.open(&sealed_to, k, old).map_err(internal)?;
                    v.sealed = Some(ring.seal(&sealed_to, k, &plain).map_err(internal)?);
                    changed = true;
                    count += 1;
                }
                if changed {
                    let value = serde_json::to_vec(&w).map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    })?;
                    txn = txn
                        .when(&kv.key, kv.mod_revision)
                        .put(kv.key.clone(), value);
                }
            }
            Ok::<_, ApiError>(if count == 0 {
                motley_store::Attempt::Done(0)
            } else {
                motley_store::Attempt::Write(txn, count)
            })
        },
        || {},
    )
    .await?;
    let resealed = match outcome {
        motley_store::Updated::Committed(n, _) | motley_store::Updated::Unchanged(n) => n,
        motley_store::Updated::Conflicted => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "the secrets kept changing during the rotation; run it again to finish",
            ));
        }
    };
    crate::state::write(&s.trust.keyring)
        .finish_rotation()
        .map_err(internal)?;
    tracing::info!("secrets key rotated to {key_id}; {resealed} value(s) sealed again");
    Ok(Json(motley_core::api::KeyRotated { key_id, resealed }))
}

pub(crate) async fn list_tokens(State(s): State<Arc<Shared>>) -> Json<Vec<TokenInfo>> {
    let mut out: Vec<TokenInfo> = s.cache().tokens.values().map(token_info).collect();
    out.sort_by_key(|t| t.created_at);
    Json(out)
}

pub(crate) async fn create_token(
    State(s): State<Arc<Shared>>,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> ApiResult<Json<CreatedToken>> {
    let Json(req) = body?;
    let role = match req.role.as_str() {
        "join" => Role::Join,
        "admin" => Role::Admin,
        "viewer" => Role::Viewer,
        other => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "role {other:?}: use join, viewer or admin (node credentials are issued by joining)"
                ),
            ));
        }
    };
    if !req.namespaces.is_empty() {
        if role == Role::Join {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "a join token cannot be limited to namespaces: only admin and viewer tokens",
            ));
        }
        for ns in &req.namespaces {
            motley_core::model::validate_name(ns).map_err(|m| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("namespace {ns:?}: {m}"),
                )
            })?;
        }
    }
    let ttl = req.ttl_seconds.map(|s| s.saturating_mul(1000));
    let (rec, token) = s
        .create_token_in(role, ttl, &req.description, req.namespaces.clone())
        .await?;
    Ok(Json(CreatedToken {
        info: token_info(&rec),
        token,
    }))
}

pub(crate) async fn revoke_token(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenInfo>> {
    let info = s
        .cache()
        .tokens
        .values()
        .find(|t| t.id == id)
        .map(token_info);
    let Some(info) = info else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("token {id} not found"),
        ));
    };
    if !s.revoke_token(&id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("token {id} changed concurrently"),
        ));
    }
    Ok(Json(info))
}

/// `POST /v1/join`: a join token is exchanged for a credential bound to one node name.
/// A name that already has a credential cannot be joined again (that would let any
/// holder of a join token impersonate an existing node).
pub(crate) async fn join(
    State(s): State<Arc<Shared>>,
    axum::Extension(Caller(role)): axum::Extension<Caller>,
    body: Result<Json<JoinRequest>, JsonRejection>,
) -> ApiResult<Json<JoinResponse>> {
    if role != Role::Join {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "joining needs a join token",
        ));
    }
    let Json(req) = body?;
    motley_core::model::validate_name(&req.node)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let taken = s.cache().tokens.values().any(|t| {
        t.role
            == (Role::Node {
                node: req.node.clone(),
            })
    });
    if taken {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "node {:?} has already joined; start its agent with its existing data dir, or revoke its credential first",
                req.node
            ),
        ));
    }
    let (_, credential) = s
        .create_token(
            Role::Node {
                node: req.node.clone(),
            },
            None,
            "node credential issued at join",
        )
        .await?;
    Ok(Json(JoinResponse {
        credential,
        ca: s.trust.ca_pem.clone(),
    }))
}

/// `GET /v1/snapshot`: every object at one revision, as a checksummed snapshot file.
pub(crate) async fn snapshot(State(s): State<Arc<Shared>>) -> ApiResult<Response> {
    let snap = motley_store::snapshot::Snapshot::take(&*s.store, keys::PREFIX, now_ms()).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        snap.encode(),
    )
        .into_response())
}
