#!/usr/bin/env node
// Sends DICOM files with dcmjs-dimse's Client: one association, one C-STORE
// per file, in the order given. dcmjs-dimse leaves Nagle's algorithm on (it
// never sets TCP_NODELAY on its socket), as many senders do.
//
//     NODE_PATH=<node_modules with dcmjs-dimse> \
//         node dcmjs_send.js CALLING_AE CALLED_AE HOST PORT FILE...
//
// Prints "dcmjs_send: sent N of N" and exits 0 when every store succeeded;
// prints what went wrong and exits 1 when the association is rejected or
// aborted, the connection fails, or any C-STORE does not answer Success;
// exits 2 on bad usage or a missing dcmjs-dimse.

"use strict";

let dimse;
try {
    dimse = require("dcmjs-dimse");
} catch (e) {
    console.error("dcmjs_send: cannot load dcmjs-dimse (set NODE_PATH): " + e.message);
    process.exit(2);
}
const { Client } = dimse;
const { CStoreRequest } = dimse.requests;
const { Status } = dimse.constants;

const argv = process.argv.slice(2);
if (argv.length < 5 || !/^[0-9]+$/.test(argv[3])) {
    console.error("usage: dcmjs_send.js CALLING_AE CALLED_AE HOST PORT FILE...");
    process.exit(2);
}
const [callingAe, calledAe, host, portText, ...files] = argv;
const port = Number(portText);

// The library's own log (loglevel) prints errors only.
dimse.log.setLevel("error");

const client = new Client();
const problems = [];
let succeeded = 0;
let answered = 0;
for (const file of files) {
    let request;
    try {
        request = new CStoreRequest(file);
    } catch (e) {
        console.error("dcmjs_send: cannot read " + file + ": " + e.message);
        process.exit(1);
    }
    request.on("response", (response) => {
        answered++;
        const status = response.getStatus();
        if (status === Status.Success) {
            succeeded++;
        } else if (problems.length < 20) {
            problems.push("C-STORE of " + file + ": status 0x" +
                          (status >>> 0).toString(16).padStart(4, "0") +
                          (response.getErrorComment() ? " (" + response.getErrorComment() + ")" : ""));
        }
    });
    client.addRequest(request);
}

let released = false;
client.on("associationRejected", (reject) => {
    problems.push("association rejected: " + JSON.stringify(reject));
});
client.on("associationReleased", () => {
    released = true;
});
client.on("networkError", (e) => {
    problems.push("network error: " + (e && e.message ? e.message : String(e)));
});
client.on("closed", () => {
    if (!released && problems.length === 0) {
        problems.push("connection closed before the association was released");
    }
    if (answered !== files.length) {
        problems.push(answered + " of " + files.length + " C-STOREs answered");
    }
    console.log("dcmjs_send: sent " + succeeded + " of " + files.length);
    if (problems.length > 0 || succeeded !== files.length) {
        for (const p of problems) {
            console.error("dcmjs_send: " + p);
        }
        process.exit(1);
    }
    process.exit(0);
});
client.send(host, port, callingAe, calledAe, {
    connectTimeout: 10000,
    associationTimeout: 30000,
    pduTimeout: 60000,
});
