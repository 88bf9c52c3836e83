/*
 * a2a.h — what agent-gw needs to know about the A2A protocol, v0.3 and v1.0 over JSON-RPC:
 * the methods (their family for policy, whether they stream, where a task id sits), the task
 * state carried by a result or a streamed event, the parts of a message, the push-notification
 * URLs a request registers, and the gateway's own error codes.
 *
 * Versions are told apart by the A2A-Version request header: absent means 0.3.
 */
#ifndef AG_A2A_H
#define AG_A2A_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* A2A's error codes (both versions). */
#define A2A_TASK_NOT_FOUND         (-32001)
#define A2A_TASK_NOT_CANCELABLE    (-32002)
#define A2A_PUSH_NOT_SUPPORTED     (-32003)
#define A2A_UNSUPPORTED_OPERATION  (-32004)
#define A2A_CONTENT_TYPE           (-32005)
#define A2A_INVALID_AGENT_RESPONSE (-32006)
#define A2A_VERSION_NOT_SUPPORTED  (-32009)

/* The gateway's refusals, in the JSON-RPC server-error range but clear of A2A's codes. Each
 * comes with data.reason naming the check. */
#define AG_ERR_FORBIDDEN    (-32040) /* policy: the caller (or the chain's origin) may not call the agent */
#define AG_ERR_LOOP         (-32041) /* the target is already on the delegation chain */
#define AG_ERR_DEPTH        (-32042) /* the chain would exceed agent_gw.max_depth */
#define AG_ERR_SUSPENDED    (-32043) /* a kill switch covers the caller, the target or the chain */
#define AG_ERR_RATE_LIMITED (-32044) /* data.retry_after_s */
#define AG_ERR_LIMIT        (-32045) /* message size, parts, file size, concurrent tasks */
#define AG_ERR_CHAIN        (-32046) /* the delegation chain header is forged, expired or not the caller's */
#define AG_ERR_PUSH_URL     (-32047) /* a push-notification URL that could reach internal networks */
#define AG_ERR_UPSTREAM     (-32048) /* the agent is unreachable, failed or timed out */

typedef enum ag_version { AG_V03 = 0, AG_V10 = 1 } ag_version_t;

/* Where a request of a method names the task it is about. */
typedef enum ag_task_in {
    AG_TASK_IN_NONE,    /* nowhere (ListTasks, the extended card) */
    AG_TASK_IN_MESSAGE, /* params.message.taskId, when the message continues a task */
    AG_TASK_IN_ID,      /* params.id (tasks/get, GetTask, the v0.3 push-config get/list/delete, …) */
    AG_TASK_IN_TASK_ID, /* params.taskId (v0.3 push-config set, the v1.0 push-config methods, whose
                           params.id is the config's id) */
} ag_task_in_t;

typedef struct ag_method {
    const char *name;
    ag_version_t version;
    const char *family;   /* the policy action: "message", "tasks", "push" or "card" */
    bool streams;         /* answered with an SSE stream */
    ag_task_in_t task_in; /* where the request names its task */
    bool lists_tasks;     /* the answer lists tasks (ListTasks): the gateway keeps the caller's only */
} ag_method_t;

/* The method by name and version, or NULL when that version has no such method. */
const ag_method_t *ag_method_find(const char *name, ag_version_t v);

/* Parses an A2A-Version header value (NULL: absent). Returns false for a version the gateway
 * does not speak. */
bool ag_version_parse(const char *value, size_t len, ag_version_t *out);
const char *ag_version_name(ag_version_t v);

/* What a response or streamed event says about a task: its id, context and state (normalised
 * to the v0.3 spelling), and whether it is final. Fields are NULL when absent. Pointers borrow
 * from the JSON. */
typedef struct ag_task_info {
    const char *task_id;
    const char *context_id;
    const char *state;
    bool final;
} ag_task_info_t;

/* Reads a JSON-RPC response (or one SSE event's data, which is one) of either version. */
void ag_task_info(const json_t *response, ag_task_info_t *out);

/* The task a request of method m names (see ag_task_in_t): the field in either spelling, camelCase
 * as the SDKs write it or snake_case as ProtoJSON parsers also read it (taskId / task_id), and a
 * v1.0 resource name "tasks/ID[/…]" read as ID. Returns 1 with *task pointing into params (len
 * bytes, not NUL-terminated when it was a resource name), 0 when the request names no task, or -1
 * with *why (a static sentence) when the field is not a string, or the two spellings disagree, so
 * that the gateway and the agent can never read different tasks out of one request. */
int ag_request_task_id(const ag_method_t *m, const json_t *params, const char **task, size_t *len, const char **why);

/* Whether an answer's task, read with ag_task_info from a list (ListTasks), is one of those the
 * caller may see: keep(task_id, data) is asked for every task in result.tasks (or a bare array
 * result) and the tasks it refuses are removed. Returns how many were removed. */
size_t ag_filter_task_list(json_t *response, bool (*keep)(const char *task_id, void *data), void *data);

/* Counts the parts of the request's message and measures its largest inline file (decoded
 * bytes). Returns false when the request carries no message (fine for non-message methods). */
bool ag_message_measure(const json_t *params, size_t *parts, int64_t *largest_file);

/* Calls fn for every push-notification URL the request could register: the `url` of every object
 * found under a member whose name, without underscores and case, contains
 * "pushnotificationconfig" (so pushNotificationConfig, push_notification_config,
 * taskPushNotificationConfig, task_push_notification_config, anywhere in params), of params
 * itself and of params.config (the push-config methods), and every element of such a member
 * that is an array. Stops when fn returns non-zero and returns that value. */
int ag_push_urls(const json_t *params, int (*fn)(const char *url, void *data), void *data);

/* A final status-update event for a task the gateway ends (kill switch), in the version's
 * shape, as the `result` of a JSON-RPC response with `id`. New reference. */
json_t *ag_canceled_event(ag_version_t v, const json_t *id, const char *task_id, const char *context_id,
                          const char *why);

/* A cancel request for a task, in the version's shape. New reference. */
json_t *ag_cancel_request(ag_version_t v, const char *task_id);

#endif
