/*
 * a2a.c — A2A v0.3 and v1.0 over JSON-RPC, as far as the gateway reads it (see a2a.h).
 *
 * v0.3 marks objects with `kind` ("task", "message", "status-update", "artifact-update") and
 * spells states in kebab-case ("input-required"); v1.0 wraps them in a member named for the type
 * ({"task": …}, {"statusUpdate": …}) and spells states TASK_STATE_INPUT_REQUIRED. Both are read
 * here and states come out in the v0.3 spelling, which the task ledger stores.
 */
#include "a2a.h"

#include "ledger.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static const ag_method_t methods[] = {
    { "message/send", AG_V03, "message", false, false },
    { "message/stream", AG_V03, "message", true, false },
    { "tasks/get", AG_V03, "tasks", false, true },
    { "tasks/cancel", AG_V03, "tasks", false, true },
    { "tasks/resubscribe", AG_V03, "tasks", true, true },
    { "tasks/list", AG_V03, "tasks", false, false },
    { "tasks/pushNotificationConfig/set", AG_V03, "push", false, true },
    { "tasks/pushNotificationConfig/get", AG_V03, "push", false, true },
    { "tasks/pushNotificationConfig/list", AG_V03, "push", false, true },
    { "tasks/pushNotificationConfig/delete", AG_V03, "push", false, true },
    { "agent/getAuthenticatedExtendedCard", AG_V03, "card", false, false },
    { "SendMessage", AG_V10, "message", false, false },
    { "SendStreamingMessage", AG_V10, "message", true, false },
    { "GetTask", AG_V10, "tasks", false, true },
    { "ListTasks", AG_V10, "tasks", false, false },
    { "CancelTask", AG_V10, "tasks", false, true },
    { "SubscribeToTask", AG_V10, "tasks", true, true },
    { "CreateTaskPushNotificationConfig", AG_V10, "push", false, true },
    { "GetTaskPushNotificationConfig", AG_V10, "push", false, true },
    { "ListTaskPushNotificationConfigs", AG_V10, "push", false, true },
    { "ListTaskPushNotificationConfig", AG_V10, "push", false, true },
    { "DeleteTaskPushNotificationConfig", AG_V10, "push", false, true },
    { "GetExtendedAgentCard", AG_V10, "card", false, false },
};

const ag_method_t *
ag_method_find(const char *name, ag_version_t v)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (methods[i].version == v && strcmp(methods[i].name, name) == 0)
            return &methods[i];
    }
    return NULL;
}

bool
ag_version_parse(const char *value, size_t len, ag_version_t *out)
{
    if (value == NULL || len == 0) {
        *out = AG_V03;
        return true;
    }
    while (len > 0 && isspace((unsigned char)value[len - 1]))
        len--;
    if ((len == 3 && memcmp(value, "0.3", 3) == 0) || (len == 5 && memcmp(value, "0.3.0", 5) == 0)) {
        *out = AG_V03;
        return true;
    }
    if ((len == 3 && memcmp(value, "1.0", 3) == 0) || (len == 1 && value[0] == '1') ||
        (len == 5 && memcmp(value, "1.0.0", 5) == 0)) {
        *out = AG_V10;
        return true;
    }
    return false;
}

const char *
ag_version_name(ag_version_t v)
{
    return v == AG_V10 ? "1.0" : "0.3";
}

/* ---- task state ---- */

static const char *
normalize_state(const char *s)
{
    const char *n = s != NULL ? ag_task_state_normalize(s) : NULL;
    return s == NULL ? NULL : n != NULL ? n : "unknown";
}

static const char *
str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static void
read_status(const json_t *obj, ag_task_info_t *out)
{
    out->state = normalize_state(str(json_object_get(obj, "status"), "state"));
    if (out->context_id == NULL)
        out->context_id = str(obj, "contextId");
}

void
ag_task_info(const json_t *response, ag_task_info_t *out)
{
    memset(out, 0, sizeof(*out));
    const json_t *r = json_object_get(response, "result");
    if (!json_is_object(r))
        return;
    const char *kind = str(r, "kind");
    if ((kind != NULL && strcmp(kind, "task") == 0) || json_object_get(r, "task") != NULL ||
        (kind == NULL && json_object_get(r, "status") != NULL && json_object_get(r, "id") != NULL)) {
        const json_t *t = kind != NULL || json_object_get(r, "task") == NULL ? r : json_object_get(r, "task");
        out->task_id = str(t, "id");
        read_status(t, out);
        out->final = ag_task_state_final(out->state);
        return;
    }
    if ((kind != NULL && strcmp(kind, "status-update") == 0) || json_object_get(r, "statusUpdate") != NULL) {
        const json_t *u = kind != NULL ? r : json_object_get(r, "statusUpdate");
        out->task_id = str(u, "taskId");
        read_status(u, out);
        out->final = json_is_true(json_object_get(u, "final")) || ag_task_state_final(out->state);
        return;
    }
    if ((kind != NULL && strcmp(kind, "artifact-update") == 0) || json_object_get(r, "artifactUpdate") != NULL) {
        const json_t *u = kind != NULL ? r : json_object_get(r, "artifactUpdate");
        out->task_id = str(u, "taskId");
        out->context_id = str(u, "contextId");
        return;
    }
    if ((kind != NULL && strcmp(kind, "message") == 0) || json_object_get(r, "message") != NULL) {
        const json_t *m = kind != NULL ? r : json_object_get(r, "message");
        out->task_id = str(m, "taskId");
        out->context_id = str(m, "contextId");
    }
}

/* ---- requests ---- */

static const json_t *
request_message(const json_t *params)
{
    const json_t *m = json_object_get(params, "message");
    if (m == NULL)
        m = json_object_get(json_object_get(params, "request"), "message"); /* older 1.0 drafts */
    return json_is_object(m) ? m : NULL;
}

const char *
ag_request_task_id(const json_t *params)
{
    const char *id = str(params, "id");
    if (id == NULL)
        id = str(params, "taskId");
    if (id == NULL)
        id = str(request_message(params), "taskId");
    if (id != NULL && strncmp(id, "tasks/", 6) == 0) /* a resource name, "tasks/ID[/…]" */
        id += 6;
    return id;
}

/* The decoded size of a base64 text of `len` characters (close enough for a limit). */
static int64_t
b64_decoded(size_t len)
{
    return (int64_t)(len / 4 * 3 + (len % 4));
}

bool
ag_message_measure(const json_t *params, size_t *parts, int64_t *largest_file)
{
    *parts = 0;
    *largest_file = 0;
    const json_t *m = request_message(params);
    if (m == NULL)
        return false;
    const json_t *list = json_object_get(m, "parts");
    *parts = json_array_size(list);
    for (size_t i = 0; i < *parts; i++) {
        const json_t *p = json_array_get(list, i);
        const json_t *file = json_object_get(p, "file");
        const char *bytes = str(file, "bytes");
        if (bytes == NULL)
            bytes = str(json_object_get(file, "fileWithBytes"), "bytes");
        if (bytes == NULL)
            bytes = str(file, "fileWithBytes");
        if (bytes == NULL)
            bytes = str(p, "raw"); /* 1.0: a part's inline bytes */
        if (bytes != NULL && b64_decoded(strlen(bytes)) > *largest_file)
            *largest_file = b64_decoded(strlen(bytes));
    }
    return true;
}

int
ag_push_urls(const json_t *params, int (*fn)(const char *url, void *data), void *data)
{
    const json_t *candidates[] = {
        json_object_get(json_object_get(params, "configuration"), "pushNotificationConfig"),
        json_object_get(json_object_get(params, "configuration"), "taskPushNotificationConfig"),
        json_object_get(params, "pushNotificationConfig"),
        json_object_get(json_object_get(params, "config"), "pushNotificationConfig"),
        json_object_get(params, "config"),
        params,
    };
    for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
        const char *url = str(candidates[i], "url");
        if (url != NULL) {
            int rv = fn(url, data);
            if (rv != 0)
                return rv;
        }
    }
    return 0;
}

json_t *
ag_canceled_event(ag_version_t v, const json_t *id, const char *task_id, const char *context_id, const char *why)
{
    json_t *msg;
    json_t *update;
    if (v == AG_V10) {
        msg = json_pack("{s:s, s:s, s:[{s:s}]}", "role", "ROLE_AGENT", "messageId", "triplane-kill", "parts", "text",
                        why);
        update = json_pack("{s:{s:s, s:s?, s:{s:s, s:o}}}", "statusUpdate", "taskId", task_id, "contextId", context_id,
                           "status", "state", "TASK_STATE_CANCELED", "message", msg);
    } else {
        msg = json_pack("{s:s, s:s, s:s, s:[{s:s, s:s}]}", "kind", "message", "role", "agent", "messageId",
                        "triplane-kill", "parts", "kind", "text", "text", why);
        update = json_pack("{s:s, s:s, s:s?, s:{s:s, s:o}, s:b}", "kind", "status-update", "taskId", task_id,
                           "contextId", context_id, "status", "state", "canceled", "message", msg, "final", 1);
    }
    return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id != NULL ? id : json_null(), "result", update);
}

json_t *
ag_cancel_request(ag_version_t v, const char *task_id)
{
    return json_pack("{s:s, s:s, s:s, s:{s:s}}", "jsonrpc", "2.0", "id", "triplane-cancel", "method",
                     v == AG_V10 ? "CancelTask" : "tasks/cancel", "params", "id", task_id);
}
