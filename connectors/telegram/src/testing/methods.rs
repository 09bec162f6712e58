//! The methods that act in a chat: send, edit, delete, react, files.

use super::*;

#[allow(clippy::result_large_err)] // the error is the answer to send
fn target_chat(inner: &Inner, params: &Value) -> Result<i64, Response> {
    let Some(id) = int(params.get("chat_id")) else {
        return Err(bad("chat_id is empty"));
    };
    match inner.chats.get(&id) {
        None => Err(bad("chat not found")),
        Some(c) => match c.migrated_to {
            Some(to) => Err(fail(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                Some(json!({"migrate_to_chat_id": to})),
            )),
            None => Ok(id),
        },
    }
}

#[allow(clippy::result_large_err)] // the error is the answer to send
fn check_place(chat: &Chat, params: &Value) -> Result<(), Response> {
    if let Some(reply) = params
        .get("reply_parameters")
        .map(|r| match r {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
            other => other.clone(),
        })
        .filter(|r| !r.is_null())
    {
        let id = int(reply.get("message_id")).unwrap_or(0);
        let lenient = reply["allow_sending_without_reply"] == json!(true);
        if !chat.messages.contains_key(&id) && !lenient {
            return Err(bad("message to be replied not found"));
        }
    }
    if params.get("message_thread_id").is_some() && !chat.forum {
        return Err(bad("message thread not found"));
    }
    Ok(())
}

fn new_bot_message(inner: &mut Inner, chat_id: i64, text: &str, extra: Value) -> Value {
    let Some(chat) = inner.chats.get_mut(&chat_id) else {
        return Value::Null;
    };
    chat.next_id += 1;
    let id = chat.next_id;
    chat.messages.insert(
        id,
        Msg {
            from_bot: true,
            text: text.to_owned(),
            reaction: Vec::new(),
        },
    );
    let mut m = json!({
        "message_id": id, "from": bot_user(), "chat": chat_json(chat_id, chat), "date": now(),
    });
    if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    m
}

pub(super) fn send_message(s: &Shared, params: &Value) -> Response {
    let mut inner = lock(&s.inner);
    let chat_id = match target_chat(&inner, params) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let text = params["text"].as_str().unwrap_or("");
    if text.is_empty() {
        return bad("message text is empty");
    }
    if text.chars().count() > 4096 {
        return bad("message is too long");
    }
    if let Some(chat) = inner.chats.get(&chat_id)
        && let Err(e) = check_place(chat, params)
    {
        return e;
    }
    ok(new_bot_message(
        &mut inner,
        chat_id,
        text,
        json!({"text": text}),
    ))
}

pub(super) fn edit_message(s: &Shared, params: &Value) -> Response {
    let mut inner = lock(&s.inner);
    let chat_id = match target_chat(&inner, params) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let id = int(params.get("message_id")).unwrap_or(0);
    let text = params["text"].as_str().unwrap_or("").to_owned();
    let Some(chat) = inner.chats.get_mut(&chat_id) else {
        return bad("chat not found");
    };
    let chat_v = chat_json(chat_id, chat);
    let Some(m) = chat.messages.get_mut(&id) else {
        return bad("message to edit not found");
    };
    if !m.from_bot {
        return bad("message can't be edited");
    }
    if m.text == text {
        return bad(
            "message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
        );
    }
    m.text = text.clone();
    ok(
        json!({"message_id": id, "from": bot_user(), "chat": chat_v, "date": now(),
              "edit_date": now(), "text": text}),
    )
}

pub(super) fn delete_message(s: &Shared, params: &Value) -> Response {
    let mut inner = lock(&s.inner);
    let chat_id = match target_chat(&inner, params) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let id = int(params.get("message_id")).unwrap_or(0);
    match inner
        .chats
        .get_mut(&chat_id)
        .and_then(|c| c.messages.remove(&id))
    {
        Some(_) => ok(json!(true)),
        None => bad("message to delete not found"),
    }
}

pub(super) fn set_reaction(s: &Shared, params: &Value) -> Response {
    let mut inner = lock(&s.inner);
    let chat_id = match target_chat(&inner, params) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let id = int(params.get("message_id")).unwrap_or(0);
    let list = match params.get("reaction") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(json!([])),
        Some(v) => v.clone(),
        None => json!([]),
    };
    let emojis: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["emoji"].as_str().unwrap_or("").to_owned())
        .collect();
    if emojis.len() > 1 {
        return bad("REACTIONS_TOO_MANY");
    }
    if emojis.iter().any(|e| !REACTIONS.contains(&e.as_str())) {
        return bad("REACTION_INVALID");
    }
    match inner
        .chats
        .get_mut(&chat_id)
        .and_then(|c| c.messages.get_mut(&id))
    {
        Some(m) => {
            m.reaction = emojis;
            ok(json!(true))
        }
        None => bad("message to react not found"),
    }
}

pub(super) fn send_file(s: &Shared, method: &str, params: &Value) -> Response {
    let mut inner = lock(&s.inner);
    let chat_id = match target_chat(&inner, params) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let field = if method == "sendPhoto" {
        "photo"
    } else {
        "document"
    };
    let Some(file) = params.get(field).filter(|f| f.get("bytes").is_some()) else {
        return bad(&format!("there is no {field} in the request"));
    };
    if let Some(chat) = inner.chats.get(&chat_id)
        && let Err(e) = check_place(chat, params)
    {
        return e;
    }
    let bytes: Vec<u8> = file["bytes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b.as_u64().map(|b| b as u8))
        .collect();
    let name = file["file_name"].as_str().unwrap_or("file").to_owned();
    let file_id = format!("BQACAgIAAx{}", inner.files.len() + 1);
    inner.files.insert(
        file_id.clone(),
        (
            format!("documents/{}", name.replace('/', "_")),
            bytes.clone(),
        ),
    );
    let obj = if field == "photo" {
        json!({"photo": [{"file_id": file_id, "file_unique_id": "u", "width": 1, "height": 1, "file_size": bytes.len()}]})
    } else {
        json!({"document": {"file_id": file_id, "file_unique_id": "u", "file_name": name, "file_size": bytes.len()}})
    };
    ok(new_bot_message(&mut inner, chat_id, "", obj))
}

pub(super) fn get_file(s: &Shared, params: &Value) -> Response {
    let inner = lock(&s.inner);
    let id = params["file_id"].as_str().unwrap_or("");
    match inner.files.get(id) {
        Some((path, bytes)) => ok(json!({"file_id": id, "file_unique_id": "u",
            "file_size": bytes.len(), "file_path": path})),
        None => bad("invalid file_id"),
    }
}

pub(super) async fn file(
    State(s): State<Shared>,
    Path((bot, path)): Path<(String, String)>,
) -> Response {
    if bot.strip_prefix("bot") != Some(s.token.as_str()) {
        return fail(401, "Unauthorized", None);
    }
    let inner = lock(&s.inner);
    match inner.files.values().find(|(p, _)| *p == path) {
        Some((_, bytes)) => bytes.clone().into_response(),
        None => fail(404, "Not Found", None),
    }
}
