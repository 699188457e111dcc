/* The status document (contract, "Status"): one JSON object served by
 * GET /status and the status socket, and its summary for a person. */
#ifndef LWSINIT_STATUS_H
#define LWSINIT_STATUS_H

#include <cjson/cJSON.h>
#include <stdio.h>

struct lwsi_agent;

/* Builds the document from the agent's state. NULL on allocation failure. */
cJSON *lwsi_status_doc(struct lwsi_agent *agent);

/* The document as compact JSON text with a trailing newline (malloc'd). */
char *lwsi_status_render(void *agent);

/* Appends the agent's metrics in the Prometheus text format. */
struct lwsi_http_buf;
int lwsi_status_metrics(struct lwsi_agent *agent, struct lwsi_http_buf *out);

/* Prints the summary of a document for a person. Returns 0 or -EINVAL when
 * the text is not a status document. */
int lwsi_status_print(FILE *out, const char *json);

#endif
