//! Protocols of identity providers and mappings (see the module documentation of
//! `keystone.rs` for the behaviour).
use super::*;

/// The operation of a request under `/v3/OS-FEDERATION/mappings` (`rest` follows the prefix).
pub(super) fn classify_mapping(method: &Method, rest: &str) -> &'static str {
    let one = rest.len() > 1 && rest.starts_with('/') && !rest[1..].contains('/');
    match (method.as_str(), rest.is_empty() || rest == "/", one) {
        ("GET", true, _) => "mapping-list",
        ("GET", _, true) => "mapping-get",
        ("PUT", _, true) => "mapping-create",
        ("PATCH", _, true) => "mapping-update",
        ("DELETE", _, true) => "mapping-delete",
        _ => "other",
    }
}

/// The operation of a request under `…/identity_providers/{id}/protocols`, if it is one.
pub(super) fn classify_protocol(method: &Method, rest: &str) -> Option<&'static str> {
    let mut segments = rest.trim_start_matches('/').split('/');
    let (_idp, protocols) = (segments.next()?, segments.next()?);
    if protocols != "protocols" {
        return Some("other");
    }
    let kind = match (method.as_str(), segments.next(), segments.next()) {
        ("GET", None | Some(""), None) => "protocol-list",
        ("GET", Some(_), None) => "protocol-get",
        ("PUT", Some(_), None) => "protocol-create",
        ("PATCH", Some(_), None) => "protocol-update",
        ("DELETE", Some(_), None) => "protocol-delete",
        _ => "other",
    };
    Some(kind)
}

fn mapping_not_found(sim: &SimState, id: &str) -> Response {
    sim.error(
        StatusCode::NOT_FOUND,
        format!("Could not find mapping: {id}."),
    )
}

fn protocol_not_found(sim: &SimState, idp: &str, protocol: &str) -> Response {
    sim.error(
        StatusCode::NOT_FOUND,
        format!("Could not find federated protocol {protocol} for Identity Provider: {idp}."),
    )
}

fn mapping_view(base: &str, id: &str, rules: &Value) -> Value {
    json!({
        "id": id,
        "rules": rules,
        "links": {"self": format!("{base}{MAPPINGS_PREFIX}/{}", encode(id))},
    })
}

fn protocol_view(base: &str, idp: &str, protocol: &str, mapping_id: &str) -> Value {
    let idp_link = format!("{base}{FEDERATION_PREFIX}/{}", encode(idp));
    json!({
        "id": protocol,
        "mapping_id": mapping_id,
        "links": {
            "self": format!("{idp_link}/protocols/{}", encode(protocol)),
            "identity_provider": idp_link,
        },
    })
}

/// The rules of a mapping body, checked as Keystone's mapping schema does.
fn validated_rules(sim: &SimState, body: &Value) -> Result<Value, Response> {
    let bad = |field: &str, message: &str| {
        sim.error(
            StatusCode::BAD_REQUEST,
            format!("Invalid input for field '{field}': {message}"),
        )
    };
    let rules = body
        .get("mapping")
        .and_then(|m| m.get("rules"))
        .ok_or_else(|| bad("mapping", "'rules' is a required property"))?;
    let list = rules
        .as_array()
        .ok_or_else(|| bad("rules", &format!("{rules} is not of type 'array'")))?;
    for (index, rule) in list.iter().enumerate() {
        validate_rule(rule)
            .map_err(|(field, message)| bad(&format!("rules/{index}{field}"), &message))?;
    }
    Ok(rules.clone())
}

/// `(path below the rule, message)` of the first schema violation of `rule`.
fn validate_rule(rule: &Value) -> Result<(), (String, String)> {
    let object = rule
        .as_object()
        .ok_or_else(|| (String::new(), format!("{rule} is not of type 'object'")))?;
    if let Some(extra) = object.keys().find(|k| *k != "local" && *k != "remote") {
        let message = format!("Additional properties are not allowed ('{extra}' was unexpected)");
        return Err((String::new(), message));
    }
    for part in ["local", "remote"] {
        let items = object
            .get(part)
            .ok_or_else(|| (String::new(), format!("'{part}' is a required property")))?
            .as_array()
            .ok_or_else(|| (format!("/{part}"), "is not of type 'array'".to_owned()))?;
        if items.is_empty() {
            return Err((format!("/{part}"), "[] is too short".into()));
        }
        for (i, item) in items.iter().enumerate() {
            if !item.is_object() {
                return Err((
                    format!("/{part}/{i}"),
                    format!("{item} is not of type 'object'"),
                ));
            }
            if part == "remote" && item.get("type").is_none_or(|t| !t.is_string()) {
                return Err((
                    format!("/{part}/{i}"),
                    "'type' is a required property".into(),
                ));
            }
        }
    }
    Ok(())
}

pub(super) async fn list_mappings(State(sim): State<Shared>, headers: HeaderMap) -> Reply {
    let base = host_of(&headers);
    let store = sim.store();
    let items: Vec<Value> = store
        .mappings
        .iter()
        .map(|(id, rules)| mapping_view(&base, id, rules))
        .collect();
    let links = json!({"self": format!("{base}{MAPPINGS_PREFIX}"), "next": null, "previous": null});
    Ok(json_response(
        StatusCode::OK,
        &json!({"mappings": items, "links": links}),
    ))
}

pub(super) async fn get_mapping(
    State(sim): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    let store = sim.store();
    let rules = store
        .mappings
        .get(&id)
        .ok_or_else(|| mapping_not_found(&sim, &id))?;
    let view = mapping_view(&host_of(&headers), &id, rules);
    Ok(json_response(StatusCode::OK, &json!({"mapping": view})))
}

pub(super) async fn create_mapping(
    State(sim): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Reply {
    if id.chars().count() > MAX_ID_LEN {
        return Err(sim.error(
            StatusCode::BAD_REQUEST,
            format!("Invalid input for field 'mapping_id': '{id}' is too long"),
        ));
    }
    let rules = validated_rules(&sim, &parse_json(&sim, &body)?)?;
    let mut store = sim.store();
    if store.mappings.contains_key(&id) {
        return Err(sim.error(
            StatusCode::CONFLICT,
            "Conflict occurred attempting to store mapping - Duplicate entry.",
        ));
    }
    let view = mapping_view(&host_of(&headers), &id, &rules);
    store.write_log.push(format!("PUT mapping {id}"));
    store.mappings.insert(id, rules);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"mapping": view}),
    ))
}

pub(super) async fn update_mapping(
    State(sim): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Reply {
    let rules = validated_rules(&sim, &parse_json(&sim, &body)?)?;
    let mut store = sim.store();
    if !store.mappings.contains_key(&id) {
        return Err(mapping_not_found(&sim, &id));
    }
    let view = mapping_view(&host_of(&headers), &id, &rules);
    store.write_log.push(format!("PATCH mapping {id}"));
    store.mappings.insert(id, rules);
    Ok(json_response(StatusCode::OK, &json!({"mapping": view})))
}

pub(super) async fn delete_mapping(State(sim): State<Shared>, Path(id): Path<String>) -> Reply {
    let mut store = sim.store();
    match store.mappings.remove(&id) {
        Some(_) => {
            store.write_log.push(format!("DELETE mapping {id}"));
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        None => Err(mapping_not_found(&sim, &id)),
    }
}

pub(super) async fn list_protocols(
    State(sim): State<Shared>,
    headers: HeaderMap,
    Path(idp): Path<String>,
) -> Reply {
    let base = host_of(&headers);
    let store = sim.store();
    if !store.idps.contains_key(&idp) {
        return Err(not_found(&sim, &idp));
    }
    let items: Vec<Value> = store
        .protocols
        .iter()
        .filter(|((owner, _), _)| owner == &idp)
        .map(|((_, protocol), mapping)| protocol_view(&base, &idp, protocol, mapping))
        .collect();
    let this = format!("{base}{FEDERATION_PREFIX}/{}/protocols", encode(&idp));
    let links = json!({"self": this, "next": null, "previous": null});
    Ok(json_response(
        StatusCode::OK,
        &json!({"protocols": items, "links": links}),
    ))
}

pub(super) async fn get_protocol(
    State(sim): State<Shared>,
    headers: HeaderMap,
    Path((idp, protocol)): Path<(String, String)>,
) -> Reply {
    let store = sim.store();
    let key = (idp.clone(), protocol.clone());
    let mapping = store
        .protocols
        .get(&key)
        .ok_or_else(|| protocol_not_found(&sim, &idp, &protocol))?;
    let view = protocol_view(&host_of(&headers), &idp, &protocol, mapping);
    Ok(json_response(StatusCode::OK, &json!({"protocol": view})))
}

/// The `mapping_id` of a protocol body, which must name an existing mapping.
fn validated_mapping_id(sim: &SimState, store: &Store, body: &Value) -> Result<String, Response> {
    let protocol = body
        .get("protocol")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            sim.error(
                StatusCode::BAD_REQUEST,
                "Invalid input for field 'protocol': 'protocol' is a required property",
            )
        })?;
    if let Some(extra) = protocol
        .keys()
        .find(|k| *k != "mapping_id" && *k != "remote_id_attribute")
    {
        return Err(sim.error(
            StatusCode::BAD_REQUEST,
            format!("Invalid input for field 'protocol': Additional properties are not allowed ('{extra}' was unexpected)"),
        ));
    }
    let mapping = protocol
        .get("mapping_id")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            sim.error(
                StatusCode::BAD_REQUEST,
                "Invalid input for field 'protocol': 'mapping_id' is a required property",
            )
        })?;
    if !store.mappings.contains_key(mapping) {
        return Err(mapping_not_found(sim, mapping));
    }
    Ok(mapping.to_owned())
}

pub(super) async fn create_protocol(
    State(sim): State<Shared>,
    headers: HeaderMap,
    Path((idp, protocol)): Path<(String, String)>,
    body: Bytes,
) -> Reply {
    let body = parse_json(&sim, &body)?;
    let mut store = sim.store();
    if !store.idps.contains_key(&idp) {
        return Err(not_found(&sim, &idp));
    }
    let mapping = validated_mapping_id(&sim, &store, &body)?;
    let key = (idp.clone(), protocol.clone());
    if store.protocols.contains_key(&key) {
        return Err(sim.error(
            StatusCode::CONFLICT,
            "Conflict occurred attempting to store federation_protocol - Duplicate entry.",
        ));
    }
    let view = protocol_view(&host_of(&headers), &idp, &protocol, &mapping);
    store
        .write_log
        .push(format!("PUT protocol {idp}/{protocol}"));
    store.protocols.insert(key, mapping);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"protocol": view}),
    ))
}

pub(super) async fn update_protocol(
    State(sim): State<Shared>,
    headers: HeaderMap,
    Path((idp, protocol)): Path<(String, String)>,
    body: Bytes,
) -> Reply {
    let body = parse_json(&sim, &body)?;
    let mut store = sim.store();
    let key = (idp.clone(), protocol.clone());
    if !store.protocols.contains_key(&key) {
        return Err(protocol_not_found(&sim, &idp, &protocol));
    }
    let mapping = validated_mapping_id(&sim, &store, &body)?;
    let view = protocol_view(&host_of(&headers), &idp, &protocol, &mapping);
    store
        .write_log
        .push(format!("PATCH protocol {idp}/{protocol}"));
    store.protocols.insert(key, mapping);
    Ok(json_response(StatusCode::OK, &json!({"protocol": view})))
}

pub(super) async fn delete_protocol(
    State(sim): State<Shared>,
    Path((idp, protocol)): Path<(String, String)>,
) -> Reply {
    let mut store = sim.store();
    let key = (idp.clone(), protocol.clone());
    match store.protocols.remove(&key) {
        Some(_) => {
            store
                .write_log
                .push(format!("DELETE protocol {idp}/{protocol}"));
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        None => Err(protocol_not_found(&sim, &idp, &protocol)),
    }
}
