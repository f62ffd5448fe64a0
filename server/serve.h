/* `bridle serve --config FILE [--listen HOST:PORT]`: loads the config,
 * opens the ledger, listens, and runs the event loop until SIGTERM has
 * drained it. Returns the process's exit status. */
#ifndef BRIDLE_SERVE_H
#define BRIDLE_SERVE_H

#define BRIDLE_VERSION "0.1.0"

int serve_main(int argc, char **argv);

#endif
