"""The writes: each operation is a function of the state at the branch tip that refuses
or returns one commit's file changes; ``run`` commits and pushes it safely."""
