// Package resp holds RESP2/RESP3 (Redis serialization protocol) handling with
// no policy in it, for a proxy's hot path:
//
//   - Reader parses client commands, multibulk and inline, exactly as
//     redis-server does (processMultibulkBuffer, processInlineBuffer and
//     sdssplitargs), returning arguments that point into its own buffer;
//   - ReplyReader and Reply parse one complete server reply of any RESP2 or
//     RESP3 type, keeping its raw bytes for zero-copy forwarding and a flat
//     tree of element offsets for walking it and rewriting strings inside it;
//   - the Append functions encode every RESP type into a byte slice.
//
// Nothing here allocates per command or per reply once buffers have grown to
// the traffic's size. Everything a parser returns is valid only until the
// next call on the same Reader or ReplyReader.
package resp
