//! A small in-memory API server for reconciler tests, behind `tower_test`'s mock service: it stores
//! objects by path, answers GET, POST, PATCH (server-side apply, status included) and DELETE, and logs
//! every request, so tests can assert the exact calls a pass makes.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use http::{Method, Request, Response, StatusCode};
use kube::{Client, client::Body};
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

#[derive(Clone, Default)]
pub struct FakeApi {
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    log: Arc<Mutex<Vec<String>>>,
    /// Requests that answer with an error, to test how errors surface.
    failing: Arc<Mutex<Option<Refusal>>>,
}

/// Every request whose `METHOD path` starts with `prefix` answers `code` with `reason`.
#[derive(Clone)]
struct Refusal {
    prefix: String,
    code: u16,
    reason: &'static str,
}

impl FakeApi {
    /// A client whose requests this fake serves, until the client is dropped.
    pub fn client(&self) -> Client {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move { fake.serve(handle).await });
        Client::new(service, "default")
    }

    /// Every request so far, as `METHOD path`, and forgets them.
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    /// Makes every `method` request under `prefix` fail with 500.
    pub fn fail(&self, method: &str, prefix: &str) {
        self.refuse(method, prefix, 500, "InternalError");
    }

    /// Makes every `method` request under `prefix` answer `code` with `reason`, as an API server that
    /// refuses it.
    pub fn refuse(&self, method: &str, prefix: &str, code: u16, reason: &'static str) {
        *self.failing.lock().unwrap() = Some(Refusal { prefix: format!("{method} {prefix}"), code, reason });
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }

    pub fn put(&self, path: &str, object: Value) {
        self.objects.lock().unwrap().insert(path.to_owned(), object);
    }

    /// Removes a stored object, as a controller that deletes it would.
    pub fn remove(&self, path: &str) {
        self.objects.lock().unwrap().remove(path);
    }

    /// Changes a stored object in place, e.g. to mark a child ready.
    pub fn edit(&self, path: &str, change: impl FnOnce(&mut Value)) {
        let mut objects = self.objects.lock().unwrap();
        change(objects.get_mut(path).unwrap_or_else(|| panic!("no object at {path}")));
    }

    async fn serve(self, mut handle: Handle) {
        while let Some((request, respond)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or_default().to_owned();
            self.log.lock().unwrap().push(format!("{method} {path}"));
            let body = request.into_body().collect_bytes().await.unwrap();
            let body: Value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
            let failing = self.failing.lock().unwrap().clone();
            let (status, reply) = match failing {
                Some(Refusal { prefix, code, reason }) if format!("{method} {path}").starts_with(&prefix) => {
                    (StatusCode::from_u16(code).unwrap(), status(code, reason, &path))
                }
                _ if method == Method::GET && is_collection(&path) => (StatusCode::OK, self.list(&path, &query)),
                _ => self.answer(&method, &path, body),
            };
            respond.send_response(
                Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap(),
            );
        }
    }

    /// The objects stored directly under a collection's path that match the `labelSelector` of `query`
    /// (equality terms only, as the reconciler sends).
    fn list(&self, path: &str, query: &str) -> Value {
        let selector = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("labelSelector="))
            .map(|s| s.replace("%3D", "=").replace("%2C", ",").replace("%2F", "/"))
            .unwrap_or_default();
        let terms: Vec<(&str, &str)> = selector.split(',').filter_map(|term| term.split_once('=')).collect();
        let prefix = format!("{path}/");
        let items: Vec<Value> = self
            .objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(key, _)| key.strip_prefix(&prefix).is_some_and(|name| !name.contains('/')))
            .filter(|(_, object)| terms.iter().all(|(k, v)| object["metadata"]["labels"][*k].as_str() == Some(*v)))
            .map(|(_, object)| object.clone())
            .collect();
        json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items})
    }

    fn answer(&self, method: &Method, path: &str, body: Value) -> (StatusCode, Value) {
        let mut objects = self.objects.lock().unwrap();
        match *method {
            Method::GET => match objects.get(path) {
                Some(object) => (StatusCode::OK, object.clone()),
                None => not_found(path),
            },
            Method::POST => {
                let name = body["metadata"]["name"].as_str().unwrap_or("generated").to_owned();
                let path = format!("{path}/{name}");
                if objects.contains_key(&path) {
                    return (StatusCode::CONFLICT, status(409, "AlreadyExists", &path));
                }
                let mut body = body;
                fold_string_data(&mut body);
                objects.insert(path, body.clone());
                (StatusCode::CREATED, body)
            }
            Method::PATCH if body.is_array() => {
                // A JSON patch: the finalizer helper adds and removes finalizers this way.
                let Some(object) = objects.get_mut(path) else { return not_found(path) };
                for operation in body.as_array().unwrap() {
                    match (operation["op"].as_str(), operation["path"].as_str()) {
                        (Some("add"), Some("/metadata/finalizers")) => {
                            object["metadata"]["finalizers"] = operation["value"].clone()
                        }
                        (Some("add"), Some("/metadata/finalizers/-")) => {
                            object["metadata"]["finalizers"].as_array_mut().unwrap().push(operation["value"].clone());
                        }
                        (Some("remove"), Some(at)) if at.starts_with("/metadata/finalizers/") => {
                            let index: usize = at.rsplit('/').next().unwrap().parse().unwrap();
                            object["metadata"]["finalizers"].as_array_mut().unwrap().remove(index);
                        }
                        _ => {}
                    }
                }
                (StatusCode::OK, object.clone())
            }
            Method::PATCH => {
                if let Some(object_path) = path.strip_suffix("/status") {
                    let Some(object) = objects.get_mut(object_path) else { return not_found(path) };
                    object["status"] = body["status"].clone();
                    return (StatusCode::OK, object.clone());
                }
                let mut merged = objects.get(path).cloned().unwrap_or_else(|| json!({}));
                for (key, value) in body.as_object().unwrap() {
                    if key == "status" {
                        continue;
                    }
                    merged[key] = value.clone();
                }
                // What the API server keeps that an apply does not send.
                if let Some(previous) = objects.get(path) {
                    merged["status"] = previous["status"].clone();
                    merged["metadata"]["generation"] =
                        json!(previous["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
                } else {
                    merged["metadata"]["generation"] = json!(1);
                }
                fold_string_data(&mut merged);
                objects.insert(path.to_owned(), merged.clone());
                (StatusCode::OK, merged)
            }
            Method::DELETE => {
                if path.ends_with("/persistentvolumeclaims") {
                    objects.retain(|key, _| !key.starts_with(&format!("{path}/")));
                    return (
                        StatusCode::OK,
                        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "items": []}),
                    );
                }
                match objects.remove(path) {
                    Some(object) => (StatusCode::OK, object),
                    None => not_found(path),
                }
            }
            _ => (StatusCode::METHOD_NOT_ALLOWED, status(405, "MethodNotAllowed", path)),
        }
    }
}

/// What the API server does with a Secret's `stringData`: each value goes into `data`, base64-encoded,
/// and `stringData` is not kept.
fn fold_string_data(object: &mut Value) {
    let Some(Value::Object(strings)) = object.as_object_mut().and_then(|o| o.remove("stringData")) else { return };
    for (key, value) in strings {
        let bytes = k8s_openapi::ByteString(value.as_str().unwrap_or_default().as_bytes().to_vec());
        object["data"][key] = serde_json::to_value(bytes).unwrap();
    }
}

/// Whether `path` names a namespaced collection (`…/namespaces/NS/RESOURCE`), not an object in it.
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    segments.len() >= 3 && segments[segments.len() - 3] == "namespaces"
}

fn status(code: u16, reason: &str, path: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "code": code, "message": format!("{reason}: {path}")})
}

fn not_found(path: &str) -> (StatusCode, Value) {
    (StatusCode::NOT_FOUND, status(404, "NotFound", path))
}
