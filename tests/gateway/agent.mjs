#!/usr/bin/env node
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The "agent" of tests/integration/test_gateway.py: a real MCP client
// (@modelcontextprotocol/sdk, streamable HTTP) that connects to URL, lists
// the tools and calls the ones named, then ends its session. Every step is
// one JSON line on stdout, the first one naming this process:
//
//   node agent.mjs URL [--call TOOL JSONARGS]... [--header NAME=VALUE]...
//
//   {"op":"start","pid":123,"url":"..."}
//   {"op":"tools","names":["echo",...]}
//   {"op":"call","tool":"echo","ok":true,"text":"Echo: hi"}
//   {"op":"error","step":"connect","message":"...","codes":["EPERM"]}
//   {"op":"done","session":"<mcp session id>"}
//
// Exit status: 0 when every step worked, 1 otherwise (the error line says
// which step failed and the error codes along its cause chain).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

function out(obj) {
	process.stdout.write(JSON.stringify(obj) + "\n");
}

function codes(err) {
	const seen = [];
	for (let e = err, i = 0; e && i < 8; e = e.cause, i++) {
		if (e.code !== undefined)
			seen.push(String(e.code));
		if (Array.isArray(e.errors))	// AggregateError (happy eyeballs)
			for (const x of e.errors)
				if (x && x.code !== undefined)
					seen.push(String(x.code));
	}
	return seen;
}

function chain(err) {
	const msgs = [];
	for (let e = err, i = 0; e && i < 8; e = e.cause, i++)
		msgs.push(String(e.message || e));
	return msgs.join(": ");
}

const argv = process.argv.slice(2);
const url = argv.shift();
const calls = [];
const headers = {};
while (argv.length) {
	const a = argv.shift();
	if (a === "--call") {
		const tool = argv.shift();
		calls.push({ tool, args: JSON.parse(argv.shift() || "{}") });
	} else if (a === "--header") {
		const h = argv.shift();
		const eq = h.indexOf("=");
		headers[h.slice(0, eq)] = h.slice(eq + 1);
	} else {
		process.stderr.write(`agent.mjs: unknown argument ${a}\n`);
		process.exit(2);
	}
}
if (!url) {
	process.stderr.write("usage: agent.mjs URL [--call TOOL JSONARGS]... [--header NAME=VALUE]...\n");
	process.exit(2);
}

out({ op: "start", pid: process.pid, url });
const client = new Client({ name: "sluice-test-agent", version: "1.0.0" }, { capabilities: {} });
const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
let step = "connect";
let status = 0;
try {
	await client.connect(transport);
	step = "tools/list";
	const tools = await client.listTools();
	out({ op: "tools", names: tools.tools.map((t) => t.name) });
	for (const c of calls) {
		step = "tools/call " + c.tool;
		const r = await client.callTool({ name: c.tool, arguments: c.args });
		const text = (r.content || []).filter((x) => x.type === "text").map((x) => x.text).join("");
		out({ op: "call", tool: c.tool, ok: !r.isError, text });
		if (r.isError)
			status = 1;
	}
	step = "close";
	const session = transport.sessionId || null;
	await transport.terminateSession();
	await client.close();
	out({ op: "done", session });
} catch (err) {
	out({ op: "error", step, message: chain(err), codes: codes(err) });
	status = 1;
	try {
		await client.close();
	} catch {
		// already failed
	}
}
process.exit(status);
