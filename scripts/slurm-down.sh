#!/usr/bin/env bash
# Stop the one-node SLURM cluster that scripts/slurm-up.sh started (the packages stay installed).
pkill -x slurmd || true
pkill -x slurmctld || true
pkill -x munged || true
echo "slurm-down: stopped"
