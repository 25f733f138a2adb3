/*
 * cli_reload.c — `ainode reload`: the node serving the configuration's data
 * directory re-reads its configuration (SIGHUP). Only a live node holding
 * the directory's lock is signalled (nodelock.h), never whatever process a
 * leftover file names.
 */
#include "config/config.h"
#include "service/cli.h"
#include "service/nodelock.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

int cli_reload(const struct config *cfg)
{
    char err[1024] = "";
    pid_t pid = 0;
    int rc = nodelock_holder(cfg->node.data_dir, &pid, err, sizeof err);
    if (rc != NODELOCK_OK) {
        fprintf(stderr, "ainode: %s; nothing signalled\n", err);
        return rc == NODELOCK_ENONE ? CLI_EXIT_NOT_SERVING : CLI_EXIT_ERROR;
    }
    if (kill(pid, SIGHUP) != 0) {
        fprintf(stderr, "ainode: cannot signal the node (pid %ld): %s\n", (long)pid,
                strerror(errno));
        return CLI_EXIT_ERROR;
    }
    printf("%s: OK; reload requested from the node (pid %ld): its log tells the outcome\n",
           cfg->path, (long)pid);
    return 0;
}
