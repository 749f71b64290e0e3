#!/usr/bin/env node
// An OPC UA server on node-opcua 2.x for the interop tests (tests/interop/README.md).
//
// node server.js [--config FILE.json] [--port N] [--pki DIR] [--operation-limit N]
//                [--max-sessions N] [--update-ms N] [--bank N] [--max-message-size N]
//                [--policies None,Basic256Sha256] [--modes None,Sign,SignAndEncrypt]
// A flag overrides the same key (camelCase) of the JSON file. Port 0 takes a free port.
//
// The address space, in namespace NAMESPACE (mirrored in tests/interop/opcua_server.py,
// KNOWN; keep the two in step). NodeIds are ns=<NAMESPACE>;s=<id>, browse paths run
// from the Objects folder:
//   s=Plant.Rising        Plant/Rising          Double 0, +1 every update-ms (new SourceTimestamp)
//   s=Plant.Constant      Plant/Constant        Double 21.5, written once at start
//   s=Plant.SensorFailed  Plant/SensorFailed    BadSensorFailure
//   s=Plant.Uncertain     Plant/Uncertain       Double 2.5, UncertainLastUsableValue
//   s=Plant.NoComm        Plant/NoComm          BadCommunicationError
//   s=Plant.Counter64     Plant/Counter64       UInt64 18446744073709551615
//   s=Plant.Vent.Gas      Plant/通风/瓦斯浓度     Double 0.42 (Chinese browse names)
//   s=Bank.T01..T<bank>   Bank/T01..            Double i + 0.5, constants for the operation limits
//   s=Text.L01..L08       Text/L01..            String of 3000 copies of the digit i % 10, constants
//                                               for the message size
// Server/ServerCapabilities/OperationLimits: MaxNodesPerRead, MaxNodesPerBrowse,
// MaxNodesPerTranslateBrowsePathsToNodeIds, MaxMonitoredItemsPerCall and
// MaxNodesPerRegisterNodes all equal operation-limit (0: no limit). A request over
// a limit is answered BadTooManyOperations, as a whole.
// --max-message-size N (0: node-opcua's own choice, 16 MiB for a client asking no
// limit; else at least 8192) is the MaxMessageSize the server acknowledges to a Hello,
// and the most it sends: a response over it is answered with a ServiceFault,
// BadTcpMessageTooLarge.
//
// Security: the pairs of --policies x --modes (None only with None). The PKI folder
// (--pki) holds the server's own certificate (own/certs/certificate.pem, made at the
// first start and kept) and the client certificates: an unknown one lands in
// rejected/ and is refused (BadSecurityChecksFailed); one in trusted/certs/ is let in.
// Anonymous sessions are allowed; at most --max-sessions (10) at once.
//
// Prints "READY port=N ... node=vX.Y.Z" on stdout once it listens, a line per session
// activated or closed, and shuts down on SIGTERM or SIGINT (closing its sessions).
"use strict";

const fs = require("fs");
const path = require("path");
const {
    OPCUAServer,
    OPCUACertificateManager,
    DataType,
    MessageSecurityMode,
    SecurityPolicy,
    StatusCodes,
    Variant,
    VariantArrayType,
    coerceNodeId,
} = require("node-opcua");

const NAMESPACE = "urn:edge-agent:interop:node-opcua";
// node-opcua holds a UInt64 as [high, low]; a Variant of one needs arrayType Scalar, or
// node-opcua takes the pair for an array and throws.
const UINT64_MAX = [0xffffffff, 0xffffffff];

function parseArgs(argv) {
    const options = {};
    for (let i = 0; i < argv.length; i += 2) {
        const flag = argv[i];
        const value = argv[i + 1];
        if (!flag.startsWith("--") || value === undefined) {
            throw new Error(`expected --name value pairs, got ${JSON.stringify(argv.slice(i))}`);
        }
        const key = flag.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
        options[key] = value;
    }
    const fromFile = options.config ? JSON.parse(fs.readFileSync(options.config, "utf8")) : {};
    const merged = { ...fromFile, ...options };
    return {
        port: Number(merged.port ?? 0),
        pki: path.resolve(merged.pki ?? "pki"),
        operationLimit: Number(merged.operationLimit ?? 0),
        maxSessions: Number(merged.maxSessions ?? 10),
        updateMs: Number(merged.updateMs ?? 100),
        bank: Number(merged.bank ?? 8),
        maxMessageSize: Number(merged.maxMessageSize ?? 0),
        policies: list(merged.policies ?? "None,Basic256Sha256"),
        modes: list(merged.modes ?? "None,Sign,SignAndEncrypt"),
    };
}

function list(value) {
    return Array.isArray(value) ? value : String(value).split(",").filter(Boolean);
}

function say(line) {
    process.stdout.write(`${line}\n`); // a pipe or a file: synchronous on Linux
}

function set(node, dataType, value, status = StatusCodes.Good) {
    const variant = new Variant({ dataType, arrayType: VariantArrayType.Scalar, value });
    node.setValueFromSource(variant, status, new Date());
}

function buildAddressSpace(server, config) {
    const addressSpace = server.engine.addressSpace;
    const namespace = addressSpace.registerNamespace(NAMESPACE);
    const objects = addressSpace.rootFolder.objects;
    const plant = namespace.addFolder(objects, { nodeId: "s=Plant", browseName: "Plant" });
    const vent = namespace.addFolder(plant, { nodeId: "s=Plant.Vent", browseName: "通风" });
    const bank = namespace.addFolder(objects, { nodeId: "s=Bank", browseName: "Bank" });
    const text = namespace.addFolder(objects, { nodeId: "s=Text", browseName: "Text" });
    // A variable with its first value; `status` other than Good is kept with it.
    const add = (parent, id, browseName, dataType, value, status) => {
        const node = namespace.addVariable({
            componentOf: parent,
            nodeId: `s=${id}`,
            browseName,
            dataType,
            minimumSamplingInterval: 50,
        });
        set(node, dataType, value, status);
        return node;
    };
    const { Double, String: Text, UInt64 } = DataType;
    const rising = add(plant, "Plant.Rising", "Rising", Double, 0);
    add(plant, "Plant.Constant", "Constant", Double, 21.5);
    add(plant, "Plant.SensorFailed", "SensorFailed", Double, 0, StatusCodes.BadSensorFailure);
    add(plant, "Plant.Uncertain", "Uncertain", Double, 2.5, StatusCodes.UncertainLastUsableValue);
    add(plant, "Plant.NoComm", "NoComm", Double, 0, StatusCodes.BadCommunicationError);
    add(plant, "Plant.Counter64", "Counter64", UInt64, UINT64_MAX);
    add(vent, "Plant.Vent.Gas", "瓦斯浓度", Double, 0.42);
    for (let i = 1; i <= config.bank; i += 1) {
        const name = `T${String(i).padStart(2, "0")}`;
        add(bank, `Bank.${name}`, name, Double, i + 0.5);
    }
    for (let i = 1; i <= 8; i += 1) {
        const name = `L${String(i).padStart(2, "0")}`;
        add(text, `Text.${name}`, name, Text, String(i % 10).repeat(3000));
    }
    let count = 0;
    setInterval(() => set(rising, Double, (count += 1)), config.updateMs);
    return namespace.index;
}

async function main() {
    const config = parseArgs(process.argv.slice(2));
    const limit = config.operationLimit;
    const certificateManager = new OPCUACertificateManager({
        rootFolder: config.pki,
        automaticallyAcceptUnknownCertificate: false, // node-opcua's default manager accepts any
    });
    // The PKI folder is polled for certificates moved into trusted/certs: every 5 s by
    // default, and a file counts once unchanged for 2 s more. Poll every 0.5 s.
    certificateManager.folderPoolingInterval = 500;
    await certificateManager.initialize();
    // node-opcua's own adjustment keeps a MaxMessageSize of at least 128 KiB; a small
    // embedded server announces less, so the whole answer to the Hello is given here.
    // node-opcua counts a message as whole chunks: with chunks larger than the message
    // size, even its ServiceFault saying so is too large (it recurses until its stack
    // overflows), so no chunk is larger than the message size.
    const chunk = (size) => Math.min(size || 65535, config.maxMessageSize);
    const transportSettings = config.maxMessageSize
        ? {
              adjustTransportLimits: (hello) => ({
                  receiveBufferSize: chunk(hello.receiveBufferSize),
                  sendBufferSize: chunk(hello.sendBufferSize),
                  maxMessageSize: config.maxMessageSize,
                  maxChunkCount: 0,
              }),
          }
        : undefined;
    const server = new OPCUAServer({
        transportSettings,
        port: config.port,
        host: "127.0.0.1",
        hostname: "127.0.0.1",
        serverCertificateManager: certificateManager,
        securityPolicies: config.policies.map((p) => SecurityPolicy[p]),
        securityModes: config.modes.map((m) => MessageSecurityMode[m]),
        allowAnonymous: true,
        isAuditing: false,
        buildInfo: { productName: "edge-agent interop node-opcua" },
        serverCapabilities: {
            maxSessions: config.maxSessions,
            operationLimits: {
                maxNodesPerRead: limit,
                maxNodesPerBrowse: limit,
                maxNodesPerTranslateBrowsePathsToNodeIds: limit,
                maxMonitoredItemsPerCall: limit,
                maxNodesPerRegisterNodes: limit,
            },
        },
    });
    await server.initialize();
    // Diagnostics feed Server/ServerDiagnostics/ServerDiagnosticsSummary/CurrentSessionCount;
    // say so rather than trust a default (node-opcua reads a misspelt option for it).
    server.engine.serverDiagnosticsEnabled = true;
    const ns = buildAddressSpace(server, config);
    server.on("session_activated", (session) => {
        say(`session_activated name=${session.sessionName}`);
    });
    server.on("session_closed", (session, deleted) => {
        say(`session_closed name=${session.sessionName} delete_subscriptions=${deleted}`);
    });
    await server.start();
    const port = server.endpoints[0].port;
    const summary = coerceNodeId("i=2277"); // ...ServerDiagnosticsSummary/CurrentSessionCount
    const count = server.engine.addressSpace.findNode(summary);
    const sessions = count ? count.nodeId.toString() : "missing";
    say(`READY port=${port} ns=${ns} sessions_node=${sessions} node=${process.version}`);

    let stopping = false;
    const stop = async (signal) => {
        if (stopping) return;
        stopping = true;
        say(`stopping signal=${signal}`);
        await server.shutdown(0);
        process.exit(0);
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
}

main().catch((err) => {
    process.stderr.write(`server.js failed: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
});
