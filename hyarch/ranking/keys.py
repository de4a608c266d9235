"""Every Optuna attribute key hyarch writes, in one place.

Optuna 5 removed system attributes; everything hyarch stores on a study or trial is a
user attribute named here, so the next storage change is a one-file edit.
"""

STUDY_NAME = "hyarch"
CANDIDATE_ID = "candidate_id"
CODE_HASH = "code_hash"
PROPOSER = "proposer"
PARENTS = "parents"
ROUND = "round"
STATUS = "status"
REASON = "reason"
WORKER = "worker"
HEARTBEAT = "heartbeat"
VERDICT = "verdict"
NOTE = "note"
OBJECTIVES = "objectives"  # study attr: names of the objective values, in order
SPACE = "space"  # study attr: path of the search space
SOURCE = "source"  # the candidate's code, so workers on other machines share the pool
RESULT = "result"  # the evaluation record (no traceback), likewise
SKIP = "skip"  # a claim past the budget: not a candidate
BUDGET = "budget"  # study attr: the candidate budget shared by all workers
RANKING = "ranking"  # study attr: candidate ids best first, by hyarch.ranking.rule
RULE = "ranking_rule"  # study attr: the rule's name
