"""The toolbox that the coursework's scripts share. Empty on purpose: importing a module of it
imports nothing else, so every script's ``--help`` stays instant."""
