#!/bin/bash
# A tiny MCP server over stdio for the container test: one tool, "echo", which returns the
# "text" it is given. One JSON-RPC message per line; it understands what mcp-gw sends and
# answers anything else with "method not found". Plain bash, because the runtime image has
# no Node or Python.
re_method='"method"[[:space:]]*:[[:space:]]*"([^"]*)"'
re_id='"id"[[:space:]]*:[[:space:]]*("([^"\\]|\\.)*"|-?[0-9]+)'
re_version='"protocolVersion"[[:space:]]*:[[:space:]]*"([^"]*)"'
re_text='"text"[[:space:]]*:[[:space:]]*"(([^"\\]|\\.)*)"'
while IFS= read -r line; do
  [[ $line =~ $re_method ]] || continue       # a response, or not JSON-RPC: nothing to answer
  method=${BASH_REMATCH[1]}
  [[ $line =~ $re_id ]] || continue           # a notification
  id=${BASH_REMATCH[1]}
  case $method in
    initialize)
      version=2025-06-18
      [[ $line =~ $re_version ]] && version=${BASH_REMATCH[1]}
      result='{"protocolVersion":"'$version'","capabilities":{"tools":{}},"serverInfo":{"name":"echo","version":"1.0.0"}}' ;;
    ping)
      result='{}' ;;
    tools/list)
      result='{"tools":[{"name":"echo","description":"Returns the text it is given.","inputSchema":{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}}]}' ;;
    tools/call)
      text=
      [[ $line =~ $re_text ]] && text=${BASH_REMATCH[1]}
      result='{"content":[{"type":"text","text":"'$text'"}],"isError":false}' ;;
    *)
      printf '{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"method not found"}}\n' "$id"
      continue ;;
  esac
  printf '{"jsonrpc":"2.0","id":%s,"result":%s}\n' "$id" "$result"
done
