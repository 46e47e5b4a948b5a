"""The command line: `dltrain`, its help, sweeps' signals, the start folder."""
