"""The startup probe: can this server keep an acknowledged commit?"""
