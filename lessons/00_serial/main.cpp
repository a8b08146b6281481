// Lesson 00 — serial. The program behind `scripts/lesson 0`: the shared lesson CLI around the
// serial executor. Predict T = Σ t_i with --predict, then run and compare.
#include "lessons/00_serial/serial.hpp"
#include "lessons/common/lesson_cli.hpp"

int main(int argc, char** argv) {
  const clab::executor* executors[] = {&clab::serial_executor()};
  return clab::lesson_main({.number = "00", .title = "serial", .executors = executors}, argc, argv);
}
