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

#define MSG AG_TASK_IN_MESSAGE
#define ID  AG_TASK_IN_ID
#define TID AG_TASK_IN_TASK_ID

static const ag_method_t methods[] = {
    { "message/send", AG_V03, "message", false, MSG, false },
    { "message/stream", AG_V03, "message", true, MSG, false },
    { "tasks/get", AG_V03, "tasks", false, ID, false },
    { "tasks/cancel", AG_V03, "tasks", false, ID, false },
    { "tasks/resubscribe", AG_V03, "tasks", true, ID, false },
    { "tasks/list", AG_V03, "tasks", false, AG_TASK_IN_NONE, true },
    { "tasks/pushNotificationConfig/set", AG_V03, "push", false, TID, false },
    { "tasks/pushNotificationConfig/get", AG_V03, "push", false, ID, false },
    { "tasks/pushNotificationConfig/list", AG_V03, "push", false, ID, false },
    { "tasks/pushNotificationConfig/delete", AG_V03, "push", false, ID, false },
    { "agent/getAuthenticatedExtendedCard", AG_V03, "card", false, AG_TASK_IN_NONE, false },
    { "SendMessage", AG_V10, "message", false, MSG, false },
    { "SendStreamingMessage", AG_V10, "message", true, MSG, false },
    { "GetTask", AG_V10, "tasks", false, ID, false },
    { "ListTasks", AG_V10, "tasks", false, AG_TASK_IN_NONE, true },
    { "CancelTask", AG_V10, "tasks", false, ID, false },
    { "SubscribeToTask", AG_V10, "tasks", true, ID, false },
    { "CreateTaskPushNotificationConfig", AG_V10, "push", false, TID, false },
    { "GetTaskPushNotificationConfig", AG_V10, "push", false, TID, false },
    { "ListTaskPushNotificationConfigs", AG_V10, "push", false, TID, false },
    { "ListTaskPushNotificationConfig", AG_V10, "push", false, TID, false },
    { "DeleteTaskPushNotificationConfig", AG_V10, "push", false, TID, false },
    { "GetExtendedAgentCard", AG_V10, "card", false, AG_TASK_IN_NONE, false },
};

#undef MSG
#undef ID
#undef TID

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

/* The string member `camel` of o, or its snake_case spelling `snake` (NULL: none): 1 with *out,
 * 0 when neither is there, -1 with *why when one is not a string or the two disagree. */
static int
member_string(const json_t *o, const char *camel, const char *snake, const char **out, const char **why)
{
    const json_t *a = json_object_get(o, camel), *b = snake != NULL ? json_object_get(o, snake) : NULL;
    if ((a != NULL && !json_is_string(a)) || (b != NULL && !json_is_string(b))) {
        *why = "the task id must be a string";
        return -1;
    }
    if (a != NULL && b != NULL && !json_equal(a, b)) {
        *why = "the request names two different tasks (camelCase and snake_case spellings)";
        return -1;
    }
    *out = json_string_value(a != NULL ? a : b);
    return *out != NULL ? 1 : 0;
}

int
ag_request_task_id(const ag_method_t *m, const json_t *params, const char **task, size_t *len, const char **why)
{
    const char *id = NULL;
    int rv = 0;
    *task = NULL;
    *len = 0;
    switch (m->task_in) {
    case AG_TASK_IN_NONE:
        return 0;
    case AG_TASK_IN_MESSAGE:
        rv = member_string(request_message(params), "taskId", "task_id", &id, why);
        break;
    case AG_TASK_IN_ID:
        rv = member_string(params, "id", NULL, &id, why);
        if (rv == 0)
            rv = member_string(params, "name", NULL, &id, why); /* older 1.0 drafts: "tasks/ID" */
        break;
    case AG_TASK_IN_TASK_ID:
        rv = member_string(params, "taskId", "task_id", &id, why);
        if (rv == 0)
            rv = member_string(params, "parent", NULL, &id, why); /* older 1.0 drafts: "tasks/ID" */
        break;
    }
    if (rv <= 0)
        return rv;
    size_t n = strlen(id);
    if (strncmp(id, "tasks/", 6) == 0) { /* a resource name, "tasks/ID[/…]" */
        id += 6;
        n = strcspn(id, "/");
    }
    *task = id;
    *len = n;
    return 1;
}

size_t
ag_filter_task_list(json_t *response, bool (*keep)(const char *task_id, void *data), void *data)
{
    json_t *result = json_object_get(response, "result");
    json_t *list = json_is_array(result) ? result : json_object_get(result, "tasks");
    if (!json_is_array(list))
        return 0;
    size_t removed = 0;
    for (size_t i = json_array_size(list); i-- > 0;) {
        const json_t *t = json_array_get(list, i);
        if (json_object_get(t, "task") != NULL) /* a wrapped task, as in stream responses */
            t = json_object_get(t, "task");
        const char *id = str(t, "id");
        if (id == NULL || !keep(id, data)) {
            json_array_remove(list, i);
            removed++;
        }
    }
    if (json_is_object(result) && json_object_get(result, "totalSize") != NULL)
        json_object_set_new(result, "totalSize", json_integer((json_int_t)json_array_size(list)));
    return removed;
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

/* "pushNotificationConfig", "task_push_notification_config", …: the name without '_', any case. */
static bool
names_push_config(const char *key)
{
    static const char want[] = "pushnotificationconfig";
    size_t n = strlen(want);
    for (const char *k = key; *k != '\0'; k++) {
        size_t i = 0;
        for (const char *c = k; *c != '\0' && i < n; c++) {
            if (*c == '_')
                continue;
            if (tolower((unsigned char)*c) != want[i])
                break;
            i++;
        }
        if (i == n)
            return true;
    }
    return false;
}

/* The url of o (an object, or each object of an array) for fn. */
static int
visit_config(const json_t *o, int (*fn)(const char *url, void *data), void *data)
{
    if (json_is_array(o)) {
        for (size_t i = 0; i < json_array_size(o); i++) {
            int rv = visit_config(json_array_get(o, i), fn, data);
            if (rv != 0)
                return rv;
        }
        return 0;
    }
    const char *url = str(o, "url");
    return url != NULL ? fn(url, data) : 0;
}

/* Every member of params at any depth: jansson's parser bounds the depth (2048). */
static int
find_push_configs(const json_t *v, int (*fn)(const char *url, void *data), void *data)
{
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            int rv = find_push_configs(json_array_get(v, i), fn, data);
            if (rv != 0)
                return rv;
        }
        return 0;
    }
    const char *key;
    json_t *member;
    json_object_foreach((json_t *)v, key, member)
    {
        int rv = names_push_config(key) ? visit_config(member, fn, data) : 0;
        if (rv == 0)
            rv = find_push_configs(member, fn, data);
        if (rv != 0)
            return rv;
    }
    return 0;
}

int
ag_push_urls(const json_t *params, int (*fn)(const char *url, void *data), void *data)
{
    int rv = visit_config(params, fn, data); /* CreateTaskPushNotificationConfig: params.url */
    if (rv == 0 && json_is_object(json_object_get(params, "config")))
        rv = visit_config(json_object_get(params, "config"), fn, data); /* older 1.0 drafts */
    if (rv == 0)
        rv = find_push_configs(params, fn, data);
    return rv;
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
