// Package sshstore is a thinback store on another host, reached through
// a connection to a thinback there (`thinback agent store PATH` run over
// ssh, as `borg serve` is): the other end is an ordinary directory store
// (catalog.Store) with all its guarantees, and this package carries its
// records and delta files over the connection. Client implements
// catalog.Repository; Serve is the other end.
//
// # Basics
//
//	// On the store's host, on the agent's stdin and stdout:
//	s, err := catalog.OpenStore(dir)
//	err = sshstore.Serve(ctx, conn, s)
//
//	// Where the commands run:
//	cl, err := sshstore.NewClient(conn, "ssh://backup@host/srv/thinback")
//	defer cl.Close()
//	unlock, err := cl.LockVolume("vg0/vm1") // held by the server
//	snap, err := cl.WriteVolumeDelta(vol, id, func(w io.Writer) (catalog.Snapshot, error) { ... })
//
// # Protocol
//
// Both sides first exchange a hello (Protocol, Version); a peer of
// another version is refused with ErrVersion. Then the client sends
// requests and the server answers each, in order, one at a time: gob
// messages of one type (msg), each read with a limit of maxMessage bytes
// whatever the sender announced (gob itself would read up to gigabytes),
// with no maps or interfaces in them, so a decoder allocates no more
// than the bytes it read. Lists go in messages of listChunk records and
// file contents in chunks of 1 MiB.
//
//   - View: the client keeps a copy of the server's catalog file in a
//     temp directory and asks, before each transaction, whether it is
//     still current (the catalog file's identity and its last committed
//     transaction); if not, the server sends the catalog as one read
//     transaction sees it (bbolt's Tx.WriteTo). The catalog holds records
//     only: a few hundred bytes a snapshot.
//   - WriteDelta, WriteVolumeDelta, ReplaceDelta: the server starts the
//     store's own method, whose write callback reads the bytes the
//     client streams (no answer to each chunk), then the record the
//     client's callback returned. The store makes the file durable (temp
//     file, fsync, rename, fsync of the directory) and commits. A client
//     that aborts, or a connection that ends, makes the callback fail: the
//     store removes the temp file and records nothing. Other requests may
//     come between the chunks (a prune's merge reads the files it merges).
//   - LockVolume, LockKeySlots: the server takes the store's lock and
//     holds it for the client until it unlocks, or the connection ends:
//     a dropped connection ends the server, and its locks with it.
//   - OpenDelta, OpenStream: reads at offsets, in blocks of 1 MiB (one
//     round trip each), the last four kept.
//   - Check: the server checks records and files (existence, size,
//     orphans) and lists the files that passed; CheckOptions.Verify runs
//     on the client for each, reading through OpenDelta or OpenStream:
//     an encrypted store's key never leaves the client, and what is
//     verified is what the client reads.
//
// # Caveats
//
// Every name the client sends (volume, snapshot id, file, key slot id)
// is checked by the server's store as its local callers' are: nothing
// outside the store's layout is reached. The server trusts the client
// with the store, as the local commands are trusted with a directory.
//
// A server failure while the client streams a file (a full disk) is told
// when the client commits: the rest of the bytes still cross the wire.
//
// The client opens the catalog copy the server sent with bbolt, which
// checks its meta pages but trusts the rest of the file's structure.
package sshstore
