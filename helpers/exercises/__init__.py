"""The lessons' exercises, checked: one function per exercise (one module per lesson),
shared by the lessons and their solution notebooks.

Every lesson ends with three exercises (starter, practitioner, expert). The learner's answer goes into a variable or
a function; the check cell below it calls the matching function here:

    exercises.check_00_starter(a100_fp8_32k)

* The answer is still `None` (as committed): it prints "⏳ ... not attempted yet" with a hint, and does not fail.
* A right answer: it prints "✅ ..." and returns a `Result` whose `.passed` is true.
* A wrong answer: it raises `ExerciseFailed` (an `AssertionError`) whose message starts with "❌" and says what is
  wrong, without giving the answer away.
* An exercise this machine or profile cannot run (no bitsandbytes kernel, a model without Grok 2's router): it prints
  "⏭ ... skipped" and says why.

The solution notebooks (`notebooks/solutions/NN_*_solutions.ipynb`) fill in every answer and run the same functions,
so CI proves that each exercise can be solved; `tests/test_exercises.py` proves that each check rejects wrong answers.
Expected values are computed here from `helpers` (the planner, the configs, the model), never typed in.
"""

from .checking import NOT_ATTEMPTED, PASSED, SKIPPED, ExerciseFailed, Result
from .lesson_00 import check_00_expert, check_00_practitioner, check_00_starter
from .lesson_01 import check_01_expert, check_01_practitioner, check_01_starter
from .lesson_02 import check_02_expert, check_02_practitioner, check_02_starter
from .lesson_03 import check_03_expert, check_03_practitioner, check_03_starter
from .lesson_04 import STARTER_04, check_04_expert, check_04_practitioner, check_04_starter
from .lesson_05 import check_05_expert, check_05_practitioner, check_05_starter
from .lesson_06 import check_06_expert, check_06_practitioner, check_06_starter
from .lesson_07 import check_07_expert, check_07_practitioner, check_07_starter

LESSONS = ("00", "01", "02", "03", "04", "05", "06", "07")
TIERS = ("starter", "practitioner", "expert")
CHECKS = {(lesson, tier): globals()[f"check_{lesson}_{tier}"] for lesson in LESSONS for tier in TIERS}

__all__ = ["ExerciseFailed", "Result", "PASSED", "NOT_ATTEMPTED", "SKIPPED", "CHECKS", "STARTER_04"] + [
    f"check_{lesson}_{tier}" for lesson in LESSONS for tier in TIERS]
