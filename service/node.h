/*
 * node — the running node: it receives instances into the store (through
 * the DICOM server of dicom/network.h), completes the studies that are
 * due and commits their plans (rules.h, storage.h), starts the runner and
 * the sender, re-reads its configuration on SIGHUP, applies retention and
 * stops on SIGTERM/SIGINT.
 */
#ifndef AINODE_SERVICE_NODE_H
#define AINODE_SERVICE_NODE_H

struct config;

/* Runs the node under CFG (it takes a reference of its own) until
 * SIGTERM/SIGINT, holding the lock of its data directory (nodelock.h), and
 * tells a service manager about it (notify.h). Returns the process exit
 * code: 0 after a stop, CLI_EXIT_IN_USE (cli.h) when another node serves
 * the data directory, 1 when it cannot start. */
int node_run(struct config *cfg);

#endif
