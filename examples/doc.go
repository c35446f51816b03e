// Package examples holds the runnable examples of dfstream, one command per
// directory (go run ./examples/NAME). Each starts an in-process server, or
// uses the servers given with -servers host:port,…. The package itself has
// no code: its test builds and runs every example.
package examples
